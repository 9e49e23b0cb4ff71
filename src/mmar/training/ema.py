"""Exponential moving average of the trainable weights, with warm-up (docs/method.md §3).

A fixed decay of 0.999 started from the initial weights still holds a third of them after
~1,000 updates (docs/performance.md), so early checkpoints evaluate as noise. The warm-up decay
``min(d, (1 + s) / (10 + s))`` averages over roughly the last 10% of updates early on and only
reaches ``d`` after ``~10 / (1 - d)`` updates.
"""

from __future__ import annotations

import torch
from torch import nn


def ema_decay(num_updates: int, max_decay: float) -> float:
    """Warm-up decay of the update number ``s = num_updates`` (0 for the first one).

    decay_s = min(d, (1 + s) / (10 + s))
    """
    return min(max_decay, (1.0 + num_updates) / (10.0 + num_updates))


class EMA:
    """Shadow copies (float32, on the parameters' device) of every trainable parameter.

    ``update(model)`` after each optimiser step: ``shadow <- decay_s * shadow + (1 - decay_s) * p``.
    ``state_dict()`` / ``load_state_dict()`` round-trip the shadows and the update count;
    ``shadow`` (name -> tensor) is what ``MMAR.save_pretrained(ema_state_dict=...)`` stores.
    """

    def __init__(self, model: nn.Module, max_decay: float):
        self.max_decay = max_decay
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone()
            for name, p in model.named_parameters()
            if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """One EMA step over the trainable parameters; returns the decay it used."""
        decay = ema_decay(self.num_updates, self.max_decay)
        params = dict(model.named_parameters())
        shadows = list(self.shadow.values())
        currents = [params[name].detach().float() for name in self.shadow]
        torch._foreach_lerp_(shadows, currents, 1.0 - decay)  # s + (1-d)(p - s) = d s + (1-d) p
        self.num_updates += 1
        return decay

    def state_dict(self) -> dict:
        return {"num_updates": self.num_updates, "max_decay": self.max_decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        unexpected = sorted(set(state["shadow"]) - set(self.shadow))
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not match the trainable parameters: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}; was it saved with another model or finetune mode?"
            )
        for name, t in state["shadow"].items():
            self.shadow[name].copy_(t)
        self.num_updates = int(state["num_updates"])
