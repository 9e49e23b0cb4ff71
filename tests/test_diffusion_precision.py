"""`mmar precision`: JSON shape, eps explodes / v stays at bf16 resolution, derivative check."""

import json

import pytest
import torch

from mmar.cli import main
from mmar.diffusion import DDIMScheduler, NoiseSchedule
from mmar.diffusion.precision import TABLE_TIMESTEPS, ddim_amplification, precision_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("precision") / "p.json"
    assert main(["precision", "--json", str(path), "--samples", "4096", "--seed", "0"]) == 0
    return json.loads(path.read_text())


def test_json_shape(report):
    assert set(report) == {"t", "rmse", "ddim_amplification"}
    assert report["t"] == list(TABLE_TIMESTEPS) == [0, 250, 500, 750, 900, 990, 999]
    assert set(report["rmse"]) == {"eps", "v", "x0"}
    assert set(report["ddim_amplification"]) == {"eps", "v"}
    for series in [*report["rmse"].values(), *report["ddim_amplification"].values()]:
        assert len(series) == 7 and all(isinstance(x, float) and x > 0 for x in series)


def test_eps_explodes_v_stays_at_bf16_resolution(report):
    r, a = report["rmse"], report["ddim_amplification"]
    assert r["eps"][-1] > 100 * r["v"][-1]  # t = 999
    assert r["eps"][-1] > 1.0  # x0 lost entirely
    assert max(r["v"]) <= 1e-2 and max(r["x0"]) <= 1e-2
    assert all(b >= a_ for a_, b in zip(r["eps"], r["eps"][1:]))  # grows with t
    assert a["eps"][-1] > 300 and max(a["v"]) < 0.1  # ~630x vs < 1 per step


def test_amplification_is_the_derivative_of_a_ddim_step():
    # finite difference of the real 50-step DDIM step t = 999 -> 979 w.r.t. the output
    sched = NoiseSchedule(1000)
    for kind in ("eps", "v"):
        s = DDIMScheduler(sched, kind, eta=0.0)
        s.set_timesteps(50)
        assert s.timesteps[:2].tolist() == [999, 979]
        x = torch.randn(1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        out, h = torch.zeros(1, 1, dtype=torch.float64), 1e-3
        d = (s.step(out + h, 999, x) - s.step(out, 999, x)).abs().item() / h
        assert d == pytest.approx(ddim_amplification(sched, [999], kind).item(), rel=1e-6)


def test_report_is_seeded_and_plot_written(tmp_path):
    a = precision_report(timesteps=[500], samples=512, seed=3)
    assert a == precision_report(timesteps=[500], samples=512, seed=3)
    png = tmp_path / "p.png"
    assert main(["precision", "--plot", str(png), "--samples", "256"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bad_arguments_raises(capsys):
    with pytest.raises(ValueError, match="kind must be"):
        ddim_amplification(NoiseSchedule(10), [5], "x0")
    assert main(["precision", "--samples", "0"]) == 2
    assert "mmar precision: --samples must be >= 1, got 0" in capsys.readouterr().err
