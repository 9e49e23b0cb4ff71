"""The training loop on the tiny preset: NaN skip/stop, time budget, init_from, corrupt images,
output-directory guards, callbacks, the EMA of tied weights across --resume, and `mmar train`
end to end through the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mmar.cli import main
from mmar.data import corpus
from mmar.model.mmar import MMARModel
from mmar.model.processor import MMARProcessor
from mmar.pipelines.mmar import MMAR
from mmar.training import checkpoint as ckpt
from mmar.training.config import load_preset
from mmar.training.trainer import Trainer, TrainingDiverged

KEYS = {
    "step",
    "loss",
    "loss_text",
    "loss_diff",
    "lr",
    "grad_norm",
    "samples_per_s",
    "skipped",
    "nan_skipped",
}


def tiny(*overrides):
    return load_preset("tiny", ["train.progress=false", *overrides])


class NaNMMAR(MMARModel):
    """MMARModel whose loss is NaN on the chosen forward calls (1-based)."""

    def __init__(self, *args, nan_calls=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_calls, self.calls = set(nan_calls), 0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        self.calls += 1
        if self.calls in self.nan_calls or (
            -1 in self.nan_calls and self.calls >= min(c for c in self.nan_calls if c > 0)
        ):
            out["loss"] = out["loss"] * float("nan")
        return out


def processor_of(cfg):
    """The processor the trainer builds for ``cfg`` (a model passed to it must fit it)."""
    return MMARProcessor.from_config(cfg.model, corpus(cfg.data))


def nan_model(cfg, nan_calls):
    p = processor_of(cfg)
    return NaNMMAR(cfg.model, p.vocab_size, p.special, nan_calls=nan_calls)


def test_nan_step_is_skipped_without_update(tmp_path):
    cfg = tiny("train.steps=5", "train.ckpt_every=0")
    t = Trainer(cfg, tmp_path, model=nan_model(cfg, nan_calls={2, 3}))
    batches = t._batches()
    assert t._train_step(batches)["finite"]
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in t.ema.shadow.items()}
    r = t._train_step(batches)
    assert not r["finite"] and t.nan_skipped == 1 and t.step == 2
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    assert all(torch.equal(ema_before[k], v) for k, v in t.ema.shadow.items())
    assert all(p.grad is None for p in t.model.parameters())
    summary = t.fit()  # steps 3 (NaN), 4, 5
    assert summary["nan_skipped"] == 2 and summary["step"] == 5
    assert t.ema.num_updates == 3
    assert t.optimizer.state_dict()["state"][0]["step"].item() == 3
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["nan_skipped"]) for r in records] == [(3, 2), (4, 2), (5, 2)]
    assert records[0]["loss"] is None and records[1]["loss"] is not None


def test_nan_in_a_row_stops_with_a_clear_message(tmp_path):
    cfg = tiny("train.max_nan_in_row=3", "train.ckpt_every=0")
    t = Trainer(cfg, tmp_path, model=nan_model(cfg, nan_calls={2, -1}))  # NaN from call 2 on
    with pytest.raises(TrainingDiverged, match=r"step 4: .*NaN/inf in 3 steps in a row"):
        t.fit()
    assert t.nan_skipped == 3


def test_time_budget_stops_and_saves(tmp_path):
    summary = Trainer(tiny("train.max_minutes=1.0e-6", "train.steps=100"), tmp_path).fit()
    assert summary["stopped"] == "time_budget" and summary["step"] == 1
    assert (tmp_path / "checkpoints" / "step_0000001").is_dir()
    assert (tmp_path / "final" / "model.safetensors").is_file()


def test_grad_accum_consumes_micro_batches(tmp_path):
    t = Trainer(
        tiny("train.grad_accum=3", "train.batch_size=4", "train.steps=2", "train.ckpt_every=0"),
        tmp_path,
    )
    summary = t.fit()
    assert summary["samples"] == 2 * 3 * 4
    assert t.data_position.state_dict() == {"epoch": 0, "offset": 24}
    assert t.optimizer.state_dict()["state"][0]["step"].item() == 2


def test_init_from_loads_ema_weights_not_optimizer_state(tmp_path):
    Trainer(tiny("train.steps=3"), tmp_path / "s1").fit()
    cfg2 = tiny(
        "train.steps=2", "model.mask.ratio_min=0.0", f"train.init_from={tmp_path / 's1' / 'final'}"
    )
    t = Trainer(cfg2, tmp_path / "s2")
    saved = load_file(str(tmp_path / "s1" / "final" / "model.safetensors"))
    name = (
        "head.input_proj.weight"
        if "ema.head.input_proj.weight" in saved
        else next(k[4:] for k in saved if k.startswith("ema."))
    )
    assert torch.equal(t.model.state_dict()[name], saved[f"ema.{name}"])
    assert not torch.equal(saved[f"ema.{name}"], saved[name])  # EMA differs from raw
    assert t.optimizer.state_dict()["state"] == {} and t.step == 0
    assert t.model.config.mask.ratio_min == 0.0


def test_corrupt_images_are_counted(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(f"noise number {i % 3}")
    for i in (3, 7):
        (data / f"{i}.png").write_bytes(b"not a png")
    cfg = tiny(
        "data.name=folder",
        f"data.path={data}",
        "data.test_fraction=0.0",
        "data.channels=1",
        "train.steps=3",
        "train.batch_size=4",
        "data.max_unreadable_share=0.25",  # 2 of 12
    )
    summary = Trainer(cfg, tmp_path / "out").fit()
    # 3 steps x 4 = every item of the first epoch: both corrupt files seen once
    assert summary["skipped"] == 2
    last = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped"] == 2


def test_out_dir_guards(tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        Trainer(tiny(), tmp_path, resume=True)
    Trainer(tiny("train.steps=1"), tmp_path).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(tiny(), tmp_path)
    from mmar.config import ConfigError

    with pytest.raises(ConfigError, match=r"another config.*batch_size"):
        Trainer(tiny("train.batch_size=4"), tmp_path, resume=True)


def test_resume_of_a_checkpoint_from_before_a_new_field(tmp_path):
    """A field added to the configs after a checkpoint was written takes its default on
    --resume (the checkpoint could not have set it); the precision may change (a machine's)."""
    Trainer(tiny("train.steps=2", "train.ckpt_every=1"), tmp_path).fit()
    state = ckpt.latest_checkpoint(tmp_path) / ckpt.STATE_DIR / "state.json"
    info = json.loads(state.read_text())
    del info["run_config"]["data"]["max_unreadable_share"]  # as if written before it existed
    del info["run_config"]["model"]["image_tokenizer"]["seed"]
    state.write_text(json.dumps(info))
    summary = Trainer(tiny("train.steps=3", "train.precision=auto"), tmp_path, resume=True).fit()
    assert summary["step"] == 3


def test_callbacks_see_every_step_in_order(tmp_path):
    calls = []

    def first(trainer, record):
        assert trainer.step == record["step"]  # called after the step
        if record["checkpoint"] is not None:  # complete when the callback sees it
            assert ckpt.latest_checkpoint(tmp_path) == record["checkpoint"]
        calls.append(("first", dict(record)))

    def second(trainer, record):
        calls.append(("second", record["step"]))

    cfg = tiny("train.steps=5", "train.ckpt_every=2", "train.log_every=100")
    summary = Trainer(cfg, tmp_path, callbacks=[first, second]).fit()
    assert summary["step"] == 5
    assert [c[0] for c in calls] == ["first", "second"] * 5
    records = [r for name, r in calls if name == "first"]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert [r["checkpoint"] for r in records] == [
        None,
        ckpt.checkpoint_path(tmp_path, 2),
        None,
        ckpt.checkpoint_path(tmp_path, 4),
        ckpt.checkpoint_path(tmp_path, 5),
    ]
    assert set(records[0]) == {
        "step",
        "loss",
        "loss_text",
        "loss_diff",
        "lr",
        "grad_norm",
        "finite",
        "samples",
        "skipped",
        "nan_skipped",
        "checkpoint",
    }
    assert all(r["finite"] and r["loss"] > 0 and r["samples"] == 8 for r in records)
    # per step, whatever log_every: metrics.jsonl only has the last step
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [5] and logged[0]["loss"] == records[-1]["loss"]


def test_callback_exception_stops_the_run(tmp_path):
    seen = []

    def stop_at_3(trainer, record):
        seen.append(record["step"])
        if record["step"] == 3:
            raise KeyboardInterrupt("stop here")

    t = Trainer(tiny("train.steps=6", "train.ckpt_every=2"), tmp_path, callbacks=[stop_at_3])
    with pytest.raises(KeyboardInterrupt, match="stop here"):
        t.fit()
    assert seen == [1, 2, 3] and t.step == 3
    assert not (tmp_path / "final").exists()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]
    resumed = Trainer(
        tiny("train.steps=6", "train.ckpt_every=2"),
        tmp_path,
        resume=True,
        callbacks=[lambda trainer, record: seen.append(record["step"])],
    )
    assert resumed.fit()["step"] == 6
    assert seen == [1, 2, 3, 3, 4, 5, 6]  # restored steps are not replayed to callbacks


def _tied_model(cfg):
    """The tiny MMAR with its LM head tied to the input embedding (one parameter, two names)."""
    p = processor_of(cfg)
    model = MMARModel(cfg.model, p.vocab_size, p.special)
    model.backbone.config.tie_word_embeddings = True
    model.backbone.lm_head.weight = model.backbone.model.embed_tokens.weight
    return model


def test_ema_of_tied_weights_is_saved_once_and_resumed(tmp_path):
    cfg = tiny("train.steps=3", "train.ckpt_every=3")
    t = Trainer(cfg, tmp_path, model=_tied_model(cfg))
    t.fit()
    names = ("backbone.lm_head.weight", "backbone.model.embed_tokens.weight")
    saved = load_file(str(ckpt.checkpoint_path(tmp_path, 3) / ckpt.WEIGHTS_FILE))
    assert sum(f"ema.{n}" in saved for n in names) == 1 and sum(n in saved for n in names) == 1
    assert not (ckpt.checkpoint_path(tmp_path, 3) / ckpt.STATE_DIR / "ema.safetensors").exists()

    resumed = Trainer(cfg, tmp_path, resume=True, model=_tied_model(cfg))
    head, emb = resumed.model.backbone.lm_head, resumed.model.backbone.model.embed_tokens
    assert head.weight is emb.weight  # still tied
    assert resumed.ema.num_updates == t.ema.num_updates == 3
    assert resumed.ema.shadow.keys() == t.ema.shadow.keys()
    assert all(torch.equal(resumed.ema.shadow[k], v) for k, v in t.ema.shadow.items())


def test_mmar_train_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--config",
            "tiny",
            "--out",
            str(out),
            "--steps",
            "5",
            "--set",
            "train.ckpt_every=2",
            "train.keep_last=2",
            "train.progress=false",
        ]
    )
    assert rc == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(set(r) == KEYS for r in records)
    assert all(r["loss"] > 0 and r["samples_per_s"] > 0 and r["lr"] > 0 for r in records)
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_0000004",
        "step_0000005",
    ]
    assert (out / "config.yaml").is_file() and json.loads((out / "summary.json").read_text())
    model = MMAR.from_pretrained(out / "final").model
    saved = load_file(str(out / "final" / "model.safetensors"))
    ema = {k[4:]: v for k, v in saved.items() if k.startswith("ema.")}
    assert ema and all(torch.equal(model.state_dict()[k], v) for k, v in ema.items())
    assert "final model" in capsys.readouterr().out


def test_mmar_train_cli_refuses_bad_config(tmp_path, capsys):
    rc = main(["train", "--config", "tiny", "--out", str(tmp_path), "--set", "data.image_size=16"])
    assert rc == 2
    assert "model.image_tokenizer.image_size" in capsys.readouterr().err
    assert not (tmp_path / "config.yaml").exists()
