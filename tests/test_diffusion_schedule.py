"""Cosine schedule: closed form, endpoints, monotonicity, float64 gathers."""

import math

import pytest
import torch

from mmar.diffusion import NoiseSchedule, cosine_alpha_bar


def f(t, T=1000, s=0.008):
    return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2


def test_cosine_alpha_bar_endpoints_monotone_float64():
    ab = cosine_alpha_bar(1000)
    assert ab.dtype == torch.float64 and ab.shape == (1000,)
    assert 1 - 1e-4 < ab[0].item() < 1  # almost clean
    assert 0 < ab[-1].item() < 1e-8  # almost pure noise, still > 0
    assert bool((ab[1:] < ab[:-1]).all())  # strictly decreasing
    assert ab[0].item() == pytest.approx(0.999958715775178, rel=1e-12)
    assert ab[-1].item() == pytest.approx(2.4287669070348567e-09, rel=1e-9)


def test_cosine_alpha_bar_closed_form():
    # where the 0.999 clip is inactive, cumprod(f(t+1)/f(t)) telescopes to f(t+1)/f(0)
    ab = cosine_alpha_bar(1000)
    for t in (0, 1, 100, 500, 900, 998):
        assert ab[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-10)
    # the last beta is clipped: ab_999 = 0.001 * ab_998
    assert ab[999].item() == pytest.approx(0.001 * ab[998].item(), rel=1e-12)


def test_noise_schedule_gathers():
    sched = NoiseSchedule(1000)
    t = torch.tensor([0, 500, 999])
    ab = sched.ab(t)
    assert ab.shape == (3, 1) and ab.dtype == torch.float64
    assert torch.equal(ab[:, 0], sched.alphas_cumprod[t])
    sa, so = sched.sqrt_ab(t), sched.sqrt_one_minus_ab(t)
    assert sa.dtype == so.dtype == torch.float32 and sa.shape == (3, 1)
    torch.testing.assert_close(
        sa.double() ** 2 + so.double() ** 2,
        torch.ones(3, 1, dtype=torch.float64),
        atol=1e-6,
        rtol=0,
    )
    # sqrt(1 - ab) near t = 0 keeps its relative precision (computed in float64)
    assert so[0, 0].item() == pytest.approx(math.sqrt(1 - 0.999958715775178), rel=1e-6)
    assert sched.ab(999).shape == (1, 1)
    assert sched.ab(torch.tensor(7)).shape == (1, 1)


def test_noise_schedule_raises():
    sched = NoiseSchedule(10)
    with pytest.raises(ValueError, match="outside"):
        sched.ab(10)
    with pytest.raises(ValueError, match="integer tensor"):
        sched.ab(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="num_timesteps"):
        cosine_alpha_bar(0)
