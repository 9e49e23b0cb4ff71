import math

import pytest
import torch

from mmar.model.config import MaskConfig
from mmar.model.masking import (
    guidance_ramp,
    mask_from_orders,
    num_masked_from_ratio,
    random_orders,
    reveal_schedule,
    sample_mask_ratio,
)


@pytest.mark.parametrize("dist", ["truncnorm", "uniform"])
@pytest.mark.parametrize("lo, hi", [(0.7, 1.0), (0.0, 1.0), (0.2, 0.4)])
def test_ratio_in_range(dist, lo, hi, generator):
    cfg = MaskConfig(distribution=dist, ratio_min=lo, ratio_max=hi)
    r = sample_mask_ratio(4096, cfg, generator)
    assert r.shape == (4096,) and r.dtype == torch.float32
    assert r.min() >= lo and r.max() <= hi
    assert r.std() > 0.01  # not degenerate


def test_truncnorm_matches_closed_form_mean(generator):
    # truncated N(1, 0.25^2) on [0.7, 1]: mean = mu - s (phi(b) - phi(a)) / (Phi(b) - Phi(a))
    cfg = MaskConfig(ratio_min=0.7, ratio_max=1.0, mode=1.0, std=0.25)
    a, b = (0.7 - 1.0) / 0.25, 0.0
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    Phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    mean = 1.0 - 0.25 * (phi(b) - phi(a)) / (Phi(b) - Phi(a))
    r = sample_mask_ratio(200_000, cfg, generator)
    assert abs(r.mean().item() - mean) < 2e-3


def test_seeded_ratios_are_reproducible():
    cfg = MaskConfig()
    a = sample_mask_ratio(8, cfg, torch.Generator().manual_seed(3))
    b = sample_mask_ratio(8, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_orders_are_permutations(generator):
    o = random_orders(5, 16, generator)
    assert torch.equal(o.sort(1).values, torch.arange(16).expand(5, 16))


def test_mask_from_orders_counts_and_positions(generator):
    o = random_orders(3, 10, generator)
    m = mask_from_orders(o, torch.tensor([1, 4, 10]))
    assert m.sum(1).tolist() == [1, 4, 10]
    assert m[1, o[1, :4]].all() and not m[1, o[1, 4:]].any()  # the first 4 of the order


def test_num_masked_at_least_one():
    n = num_masked_from_ratio(torch.tensor([0.0, 0.01, 0.5, 1.0]), 16)
    assert n.tolist() == [1, 1, 8, 16]


@pytest.mark.parametrize("N, K", [(16, 16), (16, 4), (256, 64), (16, 1), (4, 10), (1, 3)])
def test_reveal_schedule_monotone_and_complete(N, K):
    s = reveal_schedule(N, K)
    assert len(s) == K and s[-1] == 0
    revealed = [a - b for a, b in zip([N, *s[:-1]], s)]
    assert sum(revealed) == N and all(r >= 0 for r in revealed)
    if K <= N:
        assert all(r >= 1 for r in revealed)


def test_reveal_schedule_closed_form():
    # N=16, K=4: floor(16 cos(pi/8)) = 14, floor(16 cos(pi/4)) = 11, floor(16 cos(3pi/8)) = 6
    assert reveal_schedule(16, 4) == [14, 11, 6, 0]


def test_reveal_schedule_raises():
    with pytest.raises(ValueError, match="num_iter"):
        reveal_schedule(16, 0)


def test_guidance_ramp_endpoints():
    assert guidance_ramp(3.0, 16, 16) == 1.0
    assert guidance_ramp(3.0, 16, 0) == 3.0
    assert guidance_ramp(3.0, 16, 8) == 2.0


def test_annealed_steps_fall_linearly_from_first_to_final():
    from mmar.model.masking import annealed_steps

    assert annealed_steps(50, 10, 5) == [50, 40, 30, 20, 10]
    assert annealed_steps(50, None, 3) == [50, 50, 50]
    assert annealed_steps(50, 10, 1) == [50]
    assert annealed_steps(8, 8, 4) == [8, 8, 8, 8]
    steps = annealed_steps(50, 5, 16)
    assert steps[0] == 50 and steps[-1] == 5 and steps == sorted(steps, reverse=True)
