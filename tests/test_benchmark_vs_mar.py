"""benchmarks/vs_mar.py's pure helpers; its MAR plumbing only where a MAR checkout is given
(MMAR_MAR_REPO=/path/to/mar, MMAR_MAR_DEPS=dir with timm), in a subprocess."""

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vs_mar():
    spec = importlib.util.spec_from_file_location("vs_mar", ROOT / "benchmarks/vs_mar.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["vs_mar"] = mod  # dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules["vs_mar"]


def test_parse_rows(vs_mar):
    rows = vs_mar.parse_rows("mmar", "ddpm:50, ddim:10:0.5,")
    assert [(r.system, r.scheduler, r.steps, r.temperature) for r in rows] == [
        ("mmar", "ddpm", 50, None),
        ("mmar", "ddim", 10, 0.5),
    ]
    rows = vs_mar.parse_rows("mar", "50,1000:0.8")
    assert [(r.scheduler, r.steps, r.temperature) for r in rows] == [
        ("ddpm", 50, None),
        ("ddpm", 1000, 0.8),
    ]
    assert rows[1].name == "mar ddpm 1000 T=0.8"
    rows = vs_mar.parse_rows("mmar", "dpm++2m:10,ddpm:50>10:0.8")
    assert [(r.scheduler, r.steps, r.steps_final, r.temperature) for r in rows] == [
        ("dpm++2m", 10, None, None),
        ("ddpm", 50, 10, 0.8),
    ]
    assert rows[1].name == "mmar ddpm 50>10 T=0.8"
    bad_rows = [("mmar", "50"), ("mmar", "euler:10"), ("mmar", "ddpm:10>20"), ("mar", "0")]
    for system, bad in [*bad_rows, ("mar", "50>10"), ("mar", "dpm++2m:10"), ("mar", "")]:
        with pytest.raises(ValueError, match=f"--{system}-rows"):
            vs_mar.parse_rows(system, bad)


def test_resolve_temperature(vs_mar):
    r = vs_mar.RowSpec
    assert vs_mar.resolve_temperature(r("mmar", "ddpm", 50, None), 0.8).temperature == 0.8
    assert vs_mar.resolve_temperature(r("mmar", "ddpm", 50, 0.5), 0.8).temperature == 0.5
    assert vs_mar.resolve_temperature(r("mmar", "ddim", 10, 0.5), 0.8).temperature is None
    assert vs_mar.resolve_temperature(r("mmar", "dpm++2m", 10, None), 0.8).temperature is None
    assert vs_mar.resolve_temperature(r("mar", "ddpm", 50, None), 0.8).temperature == 1.0


def test_round_robin_prompts(vs_mar):
    chunks = vs_mar.round_robin_prompts(n_per_class=4, rounds=3)
    flat = [i for c in chunks for i in c]
    assert sorted(flat) == list(range(40))  # each generation exactly once
    assert [len(c) for c in chunks] == [14, 13, 13]
    for c in chunks:  # every round covers every digit (prompts are digit-major)
        assert {i // 4 for i in c} == set(range(10))
    assert len(vs_mar.round_robin_prompts(n_per_class=1, rounds=20)) == 10  # no empty rounds


def test_time_lr(vs_mar):
    lr = lambda u, t: vs_mar.time_lr(u, t, 100.0, (10, 5.0), 1e-3, 1e-5)  # noqa: E731
    assert lr(1, 0.0) == pytest.approx(1e-4)  # warm-up by updates
    assert lr(10, 1.0) == pytest.approx(1e-3)
    assert lr(11, 1.0) == pytest.approx(1e-3)  # cosine starts where warm-up ended
    assert lr(3, 5.0) == pytest.approx(1e-3)  # warm-up also ends by time
    mid = (1e-3 + 1e-5) / 2
    assert lr(500, 5.0 + 95.0 / 2) == pytest.approx(mid)
    assert lr(900, 100.0) == pytest.approx(1e-5)
    assert lr(999, 150.0) == pytest.approx(1e-5)  # past the budget: the floor
    assert all(math.isfinite(lr(u, u / 10)) for u in range(1, 2000, 37))


def test_compare(vs_mar):
    def row(s, n, a, ips, se=0.0):
        return {"system": s, "name": n, "accuracy": a, "images_per_s": ips, "accuracy_se": se}

    rows = [
        row("mmar", "m50", 0.90, 18.0),
        row("mmar", "m10", 0.60, 40.0),
        row("mar", "a50", 0.10, 7.0),
        row("mar", "a250", 0.70, 3.0),
        row("mar", "a1000", 0.85, 1.0),
    ]
    c = {x["mmar_row"]: x for x in vs_mar.compare(rows)}
    # no MAR row as accurate as m50: against MAR's most accurate, and mmar is the better
    assert c["m50"]["mar_row"] == "a1000" and c["m50"]["speedup"] == pytest.approx(18.0)
    assert c["m50"]["basis"].startswith("no MAR row") and c["m50"]["equal_quality"]
    # m10: the fastest MAR row at least as accurate, not the noise of 50 steps; but that row is
    # the more accurate (0.70 vs 0.60 with no noise), so it is no speed-up at equal quality
    assert c["m10"]["mar_row"] == "a250" and c["m10"]["speedup"] == pytest.approx(40.0 / 3.0)
    assert not c["m10"]["equal_quality"]
    assert vs_mar.headline(list(c.values()))["mmar_row"] == "m50"


def test_compare_within_the_noise(vs_mar):
    def row(s, n, a, ips, se):
        return {"system": s, "name": n, "accuracy": a, "images_per_s": ips, "accuracy_se": se}

    # 0.80 vs 0.84 with standard errors of 0.04 each: a difference of 0.7 se, equal quality;
    # 0.25 vs 0.67 (the first run's figures, n = 100): not equal, and no headline
    near = vs_mar.compare([row("mmar", "m", 0.80, 20.0, 0.04), row("mar", "a", 0.84, 0.5, 0.04)])
    assert near[0]["equal_quality"] and near[0]["speedup"] == pytest.approx(40.0)
    far = vs_mar.compare([row("mmar", "m", 0.25, 11.1, 0.043), row("mar", "a", 0.67, 0.51, 0.047)])
    assert not far[0]["equal_quality"] and vs_mar.headline(far) is None


def test_torchvision_stand_in(vs_mar):
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("a real torchvision is installed: the stand-in is not used")
    with vs_mar.torchvision_stand_in() as finder:
        from torchvision.ops.misc import FrozenBatchNorm2d
        from torchvision.transforms.functional import InterpolationMode

        modes = {InterpolationMode.NEAREST: "nearest", InterpolationMode.BILINEAR: "bilinear"}
        assert len(modes) == 2  # distinct, hashable: timm builds such a dict at import
        with pytest.raises(RuntimeError, match="stand-in"):
            FrozenBatchNorm2d(4)
    assert "torchvision.ops.misc.FrozenBatchNorm2d" in finder.touched
    assert not any(n.split(".")[0] == "torchvision" for n in sys.modules)
    assert finder not in sys.meta_path
    assert importlib.util.find_spec("torchvision") is None


def test_cuda_calls_to(vs_mar):
    cuda = torch.Tensor.cuda
    with vs_mar.cuda_calls_to(torch.device("cpu")):
        x = torch.ones(2).cuda()
        assert x.device.type == "cpu"
    assert torch.Tensor.cuda is cuda


MAR_REPO = os.environ.get("MMAR_MAR_REPO")


@pytest.mark.skipif(not MAR_REPO, reason="MMAR_MAR_REPO (a checkout of LTH14/mar) is not set")
def test_mar_runs_unchanged():
    """MAR's own model imports (timm via the stand-in), trains one step and samples, on CPU."""
    script = f"""
import argparse, sys, torch, numpy as np
from pathlib import Path
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
import vs_mar as vm
deps = {os.environ.get("MMAR_MAR_DEPS")!r}
code = vm.import_mar(Path({MAR_REPO!r}), Path(deps) if deps else None)
cfg, _ = vm.mmar_configs(0, torch.device("cpu"), [])
m = vm.build_mar(code, cfg, argparse.Namespace(mar_depth=(1, 1), mar_buffer=8))
info = vm.train_mar(code, m, cfg, 0.5, 0, torch.device("cpu"), "fp32", 1e-3)
assert info["steps"] >= 1, info
m.diffloss.gen_diffusion = code.create_diffusion("2", "cosine")
with torch.no_grad(), vm.cuda_calls_to(torch.device("cpu")):
    x = m.sample_tokens(bsz=2, num_iter=4, cfg=3.0, labels=torch.tensor([3, 7]))
assert x.shape == (2, 1, 32, 32) and torch.isfinite(x).all(), x.shape
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
