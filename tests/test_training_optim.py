"""Optimizer groups, the warmup + cosine schedule (closed form) and the EMA warm-up."""

import math

import pytest
import torch
from torch import nn

from mmar.training.config import OptimConfig
from mmar.training.ema import EMA, ema_decay
from mmar.training.optim import build_lr_scheduler, build_optimizer, lr_at, param_groups


class Toy(nn.Module):
    """Every kind of parameter the real model has: linear, conv, norm, embedding (tied to a
    linear head), a free mask vector and position embedding, and a frozen layer."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.LayerNorm(4)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.zeros(1, 16, 4))
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied LM head
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def test_param_groups_decay_only_linear_and_conv_weights():
    decay, no_decay = param_groups(Toy(), 0.02)
    assert decay["weight_decay"] == 0.02 and no_decay["weight_decay"] == 0.0
    assert sorted(decay["names"]) == ["conv.weight", "proj.weight"]
    assert sorted(no_decay["names"]) == sorted(
        [
            "embed.weight",
            "proj.bias",
            "conv.bias",
            "norm.weight",
            "norm.bias",
            "mask_token",
            "pos_embed",
        ]
    )


def test_optimizer_holds_only_trainable_params_with_design_defaults():
    model = Toy()
    opt = build_optimizer(model, OptimConfig())
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(model.frozen.weight) not in ids and id(model.frozen.bias) not in ids
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert ids == trainable
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)
    assert opt.param_groups[0]["weight_decay"] == 0.02


def test_optimizer_without_trainable_params_raises():
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), OptimConfig())


def test_lr_schedule_closed_form():
    cfg = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10)
    total = 110
    assert lr_at(0, cfg, total) == pytest.approx(1e-4)  # first update: lr / W
    assert lr_at(4, cfg, total) == pytest.approx(5e-4)
    assert lr_at(9, cfg, total) == pytest.approx(1e-3)  # peak at update W
    # halfway through the decay: min + (max - min) / 2
    assert lr_at(59, cfg, total) == pytest.approx(5.5e-4)
    assert lr_at(34, cfg, total) == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(total - 1, cfg, total) == pytest.approx(1e-4)  # last update: min_lr


def test_scheduler_follows_lr_at():
    cfg = OptimConfig(lr=1e-2, min_lr=0.0, warmup_steps=3)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_lr_scheduler(opt, cfg, 10)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([lr_at(s, cfg, 10) for s in range(10)])
    assert all(g["lr"] == opt.param_groups[0]["lr"] for g in opt.param_groups)


def test_ema_decay_warmup_numbers():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(10, 0.999) == pytest.approx(11 / 20)
    assert ema_decay(90, 0.999) == pytest.approx(0.91)
    assert ema_decay(10**6, 0.999) == 0.999
    assert ema_decay(5, 0.0) == 0.0


def test_ema_update_closed_form_and_state_round_trip():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(3.0)
    assert ema.update(model) == pytest.approx(0.1)  # s=0: 0.1 * 1 + 0.9 * 3
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 2.8))
    assert ema.update(model) == pytest.approx(2 / 11)  # s=1
    assert torch.allclose(ema.shadow["weight"], torch.full((1, 2), 2.8 * 2 / 11 + 3 * 9 / 11))
    other = EMA(model, 0.999)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 2 and torch.equal(other.shadow["weight"], ema.shadow["weight"])


def test_ema_skips_frozen_and_refuses_foreign_state():
    model = Toy()
    ema = EMA(model, 0.9)
    assert "frozen.weight" not in ema.shadow and "mask_token" in ema.shadow
    with pytest.raises(ValueError, match="EMA state does not match"):
        ema.load_state_dict(EMA(nn.Linear(2, 2), 0.9).state_dict())
