"""Resumable sampler, sample-kind mixture, atomic checkpoint directories, trainer state (EMA
from model.safetensors, tied weights), checks of damaged checkpoints, metrics log."""

import json
import os
import random

import pytest
import torch
from safetensors.torch import save_file

from mmar.training import checkpoint as ckpt
from mmar.training.batching import draw_kind, sample_generator
from mmar.training.data_order import ResumableBatchSampler, epoch_permutation
from mmar.training.metrics import MetricsLog, plot_loss


def _take(sampler, n):
    out = []
    while len(out) < n:
        for batch in sampler:
            out.append(batch)
            sampler.advance()
            if len(out) == n:
                break
    return out


def test_sampler_epochs_are_permutations_and_drop_the_tail():
    s = ResumableBatchSampler(10, 3, seed=0)
    batches = _take(s, 6)  # 3 full batches per epoch, item 10 of each epoch dropped
    first = sorted(i for b in batches[:3] for i in b)
    assert len(first) == 9 and len(set(first)) == 9
    assert batches[:3] != batches[3:]  # epochs have different orders
    assert s.state_dict() == {"epoch": 2, "offset": 0}
    assert torch.equal(epoch_permutation(10, 0, 1), epoch_permutation(10, 0, 1))


def test_sampler_resumes_at_the_same_batch():
    full = _take(ResumableBatchSampler(11, 2, seed=3), 12)
    s = ResumableBatchSampler(11, 2, seed=3)
    _take(s, 7)
    resumed = ResumableBatchSampler(11, 2, seed=3)
    resumed.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert _take(resumed, 5) == full[7:]


def test_sampler_raises_on_bad_sizes():
    with pytest.raises(ValueError, match="larger than the dataset"):
        ResumableBatchSampler(3, 4, seed=0)
    with pytest.raises(ValueError, match="another batch size"):
        ResumableBatchSampler(10, 4, seed=0).load_state_dict({"epoch": 0, "offset": 3})


def test_draw_kind_follows_weights_and_the_sample_seed():
    weights = {"t2i": 0.5, "i2t": 0.3, "img": 0.2}
    kinds = [draw_kind(weights, sample_generator(0, 0, i)) for i in range(4000)]
    freq = {k: kinds.count(k) / 4000 for k in ("t2i", "i2t", "img")}
    assert freq == pytest.approx(weights, abs=0.03)
    only = {"t2i": 1.0, "i2t": 0.0, "img": 0.0}
    assert {draw_kind(only, sample_generator(0, 0, i)) for i in range(50)} == {"t2i"}
    # a function of (seed, epoch, key) only; another epoch or seed draws anew
    again = [draw_kind(weights, sample_generator(0, 0, i)) for i in range(4000)]
    assert again == kinds
    assert [draw_kind(weights, sample_generator(0, 1, i)) for i in range(4000)] != kinds
    assert [draw_kind(weights, sample_generator(1, 0, i)) for i in range(4000)] != kinds


def _write(step, out):
    with ckpt.atomic_directory(ckpt.checkpoint_path(out, step)) as tmp:
        (tmp / ckpt.STATE_DIR).mkdir()
        (tmp / ckpt.STATE_DIR / "state.json").write_text(json.dumps({"step": step}))


def test_checkpoints_atomic_latest_keep_last_and_stale_tmp(tmp_path):
    for step in (4, 8, 12):
        _write(step, tmp_path)
    # a run killed while writing step 16 leaves only a temporary directory
    stale = tmp_path / "checkpoints" / f"{ckpt.TMP_PREFIX}step_0000016-999"
    (stale / ckpt.STATE_DIR).mkdir(parents=True)
    (stale / ckpt.STATE_DIR / "state.json").write_text("{}")
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 8, 12]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000012"
    assert ckpt.remove_stale_tmp(tmp_path) == [stale] and not stale.exists()
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [8, 12]
    _write(12, tmp_path)  # re-writing an existing step replaces it
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step_0000008", "step_0000012"]


def test_atomic_directory_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "checkpoints" / "step_0000001"
    with pytest.raises(RuntimeError), ckpt.atomic_directory(final) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")
    assert not final.exists() and os.listdir(final.parent) == []


def _linear_state():
    from mmar.training.config import OptimConfig
    from mmar.training.ema import EMA
    from mmar.training.optim import build_lr_scheduler, build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, OptimConfig(warmup_steps=2))
    return model, opt, build_lr_scheduler(opt, OptimConfig(warmup_steps=2), 10), EMA(model, 0.9)


def _save_linear_checkpoint(path, step=1):
    """A checkpoint directory as the trainer writes it, for a Linear: model.safetensors with the
    raw and "ema." tensors (save_pretrained's layout) and trainer_state/. Returns what to expect."""
    model, opt, sched, ema = _linear_state()
    model(torch.ones(1, 3)).sum().backward()
    opt.step(), sched.step(), ema.update(model)
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            **{k: v.detach().clone() for k, v in model.state_dict().items()},
            **{f"ema.{k}": v.clone() for k, v in ema.shadow.items()},
        },
        str(path / ckpt.WEIGHTS_FILE),
    )
    # the JSON files of the model's and the processor's parts (their content is not read here)
    for name in (
        ckpt.CONFIG_FILE,
        f"{ckpt.BACKBONE_DIR}/config.json",
        f"{ckpt.TOKENIZER_DIR}/tokenizer.json",
    ):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("{}")
    info = {
        "step": step,
        "data": {},
        "skipped": 0,
        "nan_skipped": 0,
        "samples": 0,
        "run_config": {},
    }
    ckpt.save_trainer_state(path / ckpt.STATE_DIR, info, opt, sched, ema)
    return info, opt, ema


def test_trainer_state_round_trip(tmp_path):
    info, opt, ema = _save_linear_checkpoint(tmp_path)
    expect_global = torch.rand(4)
    state = tmp_path / ckpt.STATE_DIR
    # the EMA is stored once: in model.safetensors; state.json keeps its bookkeeping
    assert sorted(os.listdir(state)) == ["optimizer.pt", "rng.pt", "scheduler.pt", "state.json"]
    assert json.loads((state / "state.json").read_text())["ema"] == {
        "num_updates": 1,
        "max_decay": 0.9,
    }

    _model2, opt2, sched2, ema2 = _linear_state()
    assert not torch.equal(ema2.shadow["weight"], ema.shadow["weight"])
    assert ckpt.load_trainer_state(state, opt2, sched2, ema2) == info
    assert torch.equal(torch.rand(4), expect_global)
    assert sched2.last_epoch == 1 and ema2.num_updates == 1
    assert torch.equal(ema2.shadow["weight"], ema.shadow["weight"])
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], exp_avg)


class Tied(torch.nn.Module):
    """An embedding and an output layer sharing one weight (as a tied LM head)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(5, 3)
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.emb.weight


def test_ema_shadow_of_tied_weights_found_under_any_of_their_names(tmp_path):
    model = Tied()
    assert [n for n, _ in model.named_parameters()] == ["emb.weight"]  # the EMA's key
    w = torch.randn(5, 3)
    # save_pretrained keeps a tied tensor under its first state-dict name; read it under either
    for stored in ("emb.weight", "head.weight"):
        save_file({f"ema.{stored}": w, stored: w.clone()}, str(tmp_path / f"{stored}.st"))
        shadow = ckpt.load_ema_shadow(tmp_path / f"{stored}.st", ["emb.weight"], model=model)
        assert shadow.keys() == {"emb.weight"} and torch.equal(shadow["emb.weight"], w)
    with pytest.raises(
        ValueError,
        match=r"head\.weight\.st holds no 'ema\.' tensor for .*"
        r"\['emb\.weight'\]",
    ):
        ckpt.load_ema_shadow(tmp_path / "head.weight.st", ["emb.weight"])  # no model: no aliases


def _truncate(file):
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _garbage(file):
    file.write_bytes(random.Random(0).randbytes(max(file.stat().st_size, 64)))


@pytest.mark.parametrize(
    "name, damage",
    [
        ("model.safetensors", _truncate),
        ("model.safetensors", _garbage),
        ("trainer_state/optimizer.pt", _truncate),
        ("trainer_state/rng.pt", _garbage),
        ("trainer_state/scheduler.pt", os.remove),
        ("trainer_state/state.json", _truncate),
        ("trainer_state/state.json", lambda f: f.write_text('{"step": 2}')),
    ],
)
def test_damaged_checkpoint_is_named_and_skipped(tmp_path, name, damage):
    older, newer = ckpt.checkpoint_path(tmp_path, 1), ckpt.checkpoint_path(tmp_path, 2)
    _save_linear_checkpoint(older, step=1)
    _save_linear_checkpoint(newer, step=2)
    assert ckpt.latest_readable_checkpoint(tmp_path) == (newer, [])
    damage(newer / name)
    with pytest.raises(ckpt.CheckpointError, match=rf"step_0000002/{name}: \w+"):
        ckpt.check_checkpoint(newer)
    path, problems = ckpt.latest_readable_checkpoint(tmp_path)
    assert path == older and len(problems) == 1 and f"step_0000002/{name}" in problems[0]


def test_no_readable_checkpoint(tmp_path):
    assert ckpt.latest_readable_checkpoint(tmp_path) == (None, [])
    for step in (1, 2):
        _save_linear_checkpoint(ckpt.checkpoint_path(tmp_path, step), step=step)
    _truncate(ckpt.checkpoint_path(tmp_path, 2) / ckpt.WEIGHTS_FILE)
    os.remove(ckpt.checkpoint_path(tmp_path, 1) / ckpt.STATE_DIR / "state.json")
    path, problems = ckpt.latest_readable_checkpoint(tmp_path)
    assert path is None
    assert "step_0000002/model.safetensors: SafetensorError" in problems[0]
    assert problems[1].endswith("step_0000001/trainer_state/state.json: missing")


def test_metrics_log_nan_as_null_truncate_and_plot(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.append(
            {
                "step": step,
                "loss": float("nan") if step == 2 else 1.0 / step,
                "loss_text": 0.5,
                "loss_diff": 0.5,
            }
        )
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["loss"] is None  # strict JSON
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2]
    plot_loss(log.read(), tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_collator_draws_depend_on_the_item_not_the_batch():
    """A sample's kind and CFG dropout are functions of (seed, epoch, key): the same whichever
    batch (or worker, or rank) it lands in; another epoch draws anew."""
    from helpers_model import CORPUS, random_images, tiny_model
    from mmar.training.batching import TrainingCollator

    processor = tiny_model().processor
    images = random_images(12)
    items = [{"image": images[i], "text": CORPUS[i % 5], "label": -1, "key": i} for i in range(12)]
    collator = TrainingCollator(processor, {"t2i": 1.0, "i2t": 1.0, "img": 1.0}, seed=3)

    def per_item(batches):
        out = {}
        for batch in batches:
            inputs = collator(batch)["inputs"].batch
            for it, gen, labels in zip(batch, inputs.generative, inputs.labels):
                out[it["key"]] = (bool(gen), (labels != -100).sum().item())
        return out

    whole = per_item([items])
    assert per_item([items[7:], items[:7]]) == whole
    assert per_item([items[i : i + 3] for i in range(0, 12, 3)][::-1]) == whole
    assert len(set(whole.values())) > 1  # the kinds differ between items
    collator.set_epoch(1)
    assert per_item([items]) != whole
