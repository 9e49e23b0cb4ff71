"""eps <-> v <-> x0 conversions: float64 round trips, dtypes, raises."""

import pytest
import torch

from mmar.diffusion import (
    NoiseSchedule,
    eps_from_v,
    eps_from_x0,
    predict_x0_and_eps,
    q_sample,
    training_target,
    v_target,
    x0_from_eps,
    x0_from_v,
)

SCHED = NoiseSchedule(1000)
# t = 999 is left out of the eps -> x0 round trip on purpose: 1/sqrt(ab_999) ~ 2e4 amplifies
# float64 rounding to ~1e-11, which is the ill-conditioning that v-prediction avoids
T_ROWS = torch.tensor([0, 1, 250, 500, 750, 900, 990])


def _data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(len(T_ROWS), 5, generator=g, dtype=dtype)
    eps = torch.randn(len(T_ROWS), 5, generator=g, dtype=dtype)
    return x0, eps, SCHED.ab(T_ROWS)


def test_round_trips_float64():
    x0, eps, ab = _data()
    x_t = q_sample(x0, eps, ab)
    v = v_target(x0, eps, ab)
    torch.testing.assert_close(x0_from_v(x_t, v, ab), x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps_from_v(x_t, v, ab), eps, atol=1e-12, rtol=0)
    torch.testing.assert_close(x0_from_eps(x_t, eps, ab), x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps_from_x0(x_t, x0, ab), eps, atol=1e-12, rtol=0)
    # v is a rotation of (x0, eps): |v|^2 + |x_t|^2 = |x0|^2 + |eps|^2
    torch.testing.assert_close(v**2 + x_t**2, x0**2 + eps**2, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["v", "eps", "x0"])
def test_predict_x0_and_eps_inverts_training_target(kind):
    x0, eps, ab = _data()
    x_t = q_sample(x0, eps, ab)
    x0_hat, eps_hat = predict_x0_and_eps(kind, training_target(kind, x0, eps, ab), x_t, ab)
    torch.testing.assert_close(x0_hat, x0, atol=1e-12, rtol=0)
    torch.testing.assert_close(eps_hat, eps, atol=1e-12, rtol=0)


def test_v_at_t999_recovers_x0_where_eps_cannot():
    # at ab ~ 2e-9 the v conversion is still exact to float64 rounding
    x0, eps, _ = _data()
    ab = SCHED.ab(999)
    x_t = q_sample(x0, eps, ab)
    torch.testing.assert_close(x0_from_v(x_t, v_target(x0, eps, ab), ab), x0, atol=1e-12, rtol=0)


def test_dtypes_float32_work_and_bf16_upcast():
    x0, eps, ab = _data(torch.float32)
    assert q_sample(x0, eps, ab).dtype == torch.float32  # float64 ab does not promote
    out = v_target(x0, eps, ab).to(torch.bfloat16)
    x0_hat, eps_hat = predict_x0_and_eps("v", out, q_sample(x0, eps, ab), ab)
    assert x0_hat.dtype == eps_hat.dtype == torch.float32  # bf16 output converted in fp32
    assert (x0_hat - x0).abs().max().item() < 2e-2


def test_bad_kind_or_shape_raises():
    x0, eps, ab = _data()
    with pytest.raises(ValueError, match="parameterization must be one of"):
        training_target("foo", x0, eps, ab)
    with pytest.raises(ValueError, match="output shape"):
        predict_x0_and_eps("v", x0[:, :3], x0, ab)
