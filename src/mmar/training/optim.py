"""AdamW with weight-decay parameter groups, and the warmup + cosine learning-rate schedule.

Groups follow minGPT's rule: only the ``weight`` of ``nn.Linear`` / ``nn.Conv*`` layers is decayed.
Everything else -- biases, norm gains, embedding tables (``nn.Embedding``) and free
``nn.Parameter`` tensors such as the [MASK] vector and learned position embeddings -- is not,
because shrinking them towards 0 changes what they represent rather than regularising a map.
A weight shared by an embedding and a linear layer (tied LM head) counts as an embedding.
Only parameters with ``requires_grad`` reach the optimiser (frozen backbones, LoRA).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmar.training.config import OptimConfig

_DECAYED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups over the trainable parameters: ``[{decayed, wd}, {the rest, wd=0}]``.

    Each group also carries ``names`` (parameter names, in ``named_parameters`` order), so tests
    and logs can say which tensor went where; ``torch.optim`` ignores extra group keys.
    """
    decay_ids: set[int] = set()
    no_decay_ids: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if isinstance(module, _DECAYED_MODULES) and pname == "weight":
                decay_ids.add(id(p))
            else:
                no_decay_ids.add(id(p))
    decay: tuple[list[nn.Parameter], list[str]] = ([], [])
    no_decay: tuple[list[nn.Parameter], list[str]] = ([], [])
    for name, p in model.named_parameters():  # de-duplicates tied tensors
        if not p.requires_grad:
            continue
        params, names = decay if id(p) in decay_ids and id(p) not in no_decay_ids else no_decay
        params.append(p)
        names.append(name)
    return [
        {"params": decay[0], "names": decay[1], "weight_decay": weight_decay},
        {"params": no_decay[0], "names": no_decay[1], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`param_groups` with ``cfg``'s lr, betas, eps and decay."""
    groups = [g for g in param_groups(model, cfg.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps)


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate of update ``u = step + 1`` (``step`` 0-based); ``W`` warm-up, ``T`` total.

    lr(u) = lr_max * u / W                                               for u <= W
    lr(u) = lr_min + (lr_max - lr_min) * (1 + cos(pi (u - W) / (T - W))) / 2   for u > W

    so the first update already moves, update ``W`` uses ``lr_max`` and update ``T`` ``lr_min``.
    A warm-up longer than the run (W > T) never reaches ``lr_max``.
    """
    u, w = step + 1, cfg.warmup_steps
    if u <= w:
        return cfg.lr * u / w
    progress = min(1.0, (u - w) / max(1, total_steps - w))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` whose factor is ``lr_at(step) / lr``; its ``last_epoch`` is the step count."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_at(step, cfg, total_steps) / cfg.lr
    )
