"""sample_tokens: CFG on the prediction with one doubled head call per step, oracle recovery."""

import pytest
import torch
from torch import nn

from mmar.diffusion import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionHead,
    NoiseSchedule,
    eps_from_x0,
    sample_tokens,
    training_target,
)

SCHED = NoiseSchedule(1000)


class LinearHead(nn.Module):
    """out = A x + B cond: linear in cond, so guidance on out equals sampling with the mixed
    condition uncond + w (cond - uncond). Records every call."""

    def __init__(self, token_dim=3, cond_dim=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.token_dim = token_dim
        self.a = 0.1 * torch.randn(token_dim, token_dim, generator=g, dtype=torch.float64)
        self.b = torch.randn(cond_dim, token_dim, generator=g, dtype=torch.float64)
        self.calls = []

    def forward(self, x, t, cond):
        self.calls.append((x.clone(), t, cond.shape[0]))
        return x @ self.a + cond @ self.b


class OracleHead(nn.Module):
    """The exact output for a fixed x0 (one per row, chosen by cond's first column)."""

    def __init__(self, x0, kind):
        super().__init__()
        self.x0, self.kind, self.token_dim = x0, kind, x0.shape[1]

    def forward(self, x, t, cond):
        ab = SCHED.ab(t)
        return training_target(self.kind, self.x0, eps_from_x0(x, self.x0, ab), ab)


def _conds(m=5, c=4):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(m, c, generator=g, dtype=torch.float64),
        torch.randn(m, c, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize("sched_cls", [DDIMScheduler, DDPMScheduler])
def test_guidance_scale_one_equals_no_guidance(sched_cls):
    head = DiffusionHead(token_dim=3, cond_dim=4, width=16, depth=2).double()
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
        cond, uncond = _conds()

        def run(**kw):
            return sample_tokens(
                head,
                cond,
                sched_cls(SCHED, "v"),
                8,
                generator=torch.Generator().manual_seed(0),
                **kw,
            )

        plain = run()
        torch.testing.assert_close(run(uncond=uncond, guidance_scale=1.0), plain, atol=0, rtol=0)
        # a tensor scale of ones takes the doubled-batch path and must give the same tokens
        ones = run(uncond=uncond, guidance_scale=torch.ones(5, dtype=torch.float64))
        torch.testing.assert_close(ones, plain, atol=1e-10, rtol=0)
        assert not torch.allclose(run(uncond=uncond, guidance_scale=3.0), plain)


@pytest.mark.parametrize("w", [3.0, torch.tensor([1.0, 2.0, 3.0, 4.0, 0.5])])
def test_guidance_on_prediction_one_doubled_call_per_step(w):
    cond, uncond = _conds()
    head = LinearHead()
    out = sample_tokens(
        head,
        cond,
        DDIMScheduler(SCHED, "v"),
        6,
        uncond=uncond,
        guidance_scale=w,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(head.calls) == 6  # one head call per step
    for x, t, rows in head.calls:
        assert isinstance(t, int) and rows == 10  # shared t, doubled batch
        assert torch.equal(x[:5], x[5:])  # the same x for both halves
    w_col = w[:, None].double() if isinstance(w, torch.Tensor) else w
    mixed = uncond + w_col * (cond - uncond)
    ref = sample_tokens(
        LinearHead(),
        mixed,
        DDIMScheduler(SCHED, "v"),
        6,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["v", "eps", "x0"])
@pytest.mark.parametrize("sched_cls", [DDIMScheduler, DDPMScheduler])
def test_oracle_head_samples_its_x0(kind, sched_cls):
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    cond, _ = _conds()
    out = sample_tokens(
        OracleHead(x0, kind),
        cond,
        sched_cls(SCHED, kind),
        10,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, x0, atol=1e-6, rtol=0)


def test_deterministic_given_generator_and_float32_state():
    head = DiffusionHead(token_dim=3, cond_dim=4, width=8, depth=1)
    cond = torch.randn(2, 4).to(torch.bfloat16)
    a, b = (
        sample_tokens(
            head, cond, DDPMScheduler(SCHED), 4, generator=torch.Generator().manual_seed(0)
        )
        for _ in range(2)
    )
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == (2, 3)


def test_bad_arguments_raises():
    cond, uncond = _conds()
    head = LinearHead()
    with pytest.raises(TypeError, match="argument order"):
        sample_tokens(head, cond, uncond, DDIMScheduler(SCHED))
    with pytest.raises(ValueError, match="uncond shape"):
        sample_tokens(head, cond, DDIMScheduler(SCHED), 4, uncond=uncond[:3], guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale must be"):
        sample_tokens(
            head, cond, DDIMScheduler(SCHED), 4, uncond=uncond, guidance_scale=torch.ones(3)
        )
    with pytest.raises(ValueError, match=r"cond must be \(M, C\)"):
        sample_tokens(head, cond[0], DDIMScheduler(SCHED), 4)
