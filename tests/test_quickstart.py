"""`mmar quickstart` end to end on a very short run (what `make demo` runs, minus the minutes)."""

import json

from PIL import Image

from mmar.cli import main
from mmar.cli.quickstart import write_model_card
from mmar.model.files import read_config
from mmar.training.config import load_preset


def test_quickstart_short_run_writes_every_output(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # judge trained afresh
    out = tmp_path / "qs"
    rc = main(
        [
            "quickstart",
            "--steps",
            "4",
            "--n-per-class",
            "1",
            "--samples-per-row",
            "2",
            "--out",
            str(out),
            "--set",
            "train.progress=false",
            "train.batch_size=8",
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    for key in (
        "t2i_accuracy",
        "classifier_fid",
        "classifier_fid_real_floor",
        "caption_accuracy",
        "judge_heldout_accuracy",
        "images_per_second",
        "train_seconds",
        "total_seconds",
    ):
        assert key in res, key
    assert 0.0 <= res["t2i_accuracy"] <= 1.0 and 0.0 <= res["caption_accuracy"] <= 1.0
    assert res["train_steps"] == {"stage1": 2, "stage2": 2}
    assert res["judge_heldout_accuracy"] > 0.9  # a real judge, not a stand-in
    grid = Image.open(out / "samples.png")
    assert grid.size == (2 * 32 * 2, 10 * 32 * 2)  # 2 columns x 10 digits, drawn at 2x
    lines = (out / "captions.txt").read_text().splitlines()
    assert len(lines) == 20 and all(line.startswith("test[") for line in lines)

    card = (out / "README.md").read_text()  # the final model's card carries the evaluation
    assert json.loads((out / "metrics.json").read_text()) == res
    assert "| t2i_accuracy |" in card and "](samples.png)" in card

    import mmar

    model = mmar.MMAR.from_pretrained(out)  # the final model sits at the top of OUT
    # the presets' recommended sampling travels with the model and is what evaluation used
    assert model.sampling.scheduler == "ddpm" and model.sampling.temperature == 0.8
    assert res["sampling"] == model.sampling.to_dict()
    assert len(model.caption(model.generate_images([""], num_iter=2, num_steps=2))) == 1


def test_quickstart_shapes_bench_trains_all_three_tasks_and_scores_them(tmp_path, monkeypatch):
    """--bench shapes: a KL tokenizer trained first (phase 0), the shapes presets on its latents
    (vqa samples included), the shapes benchmark."""
    from mmar.evaluation import shapes_bench

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(shapes_bench, "JUDGE_TRAIN_ITEMS", 200)  # a quick judge: seconds
    out = tmp_path / "qs"
    small = [  # the presets' structure at a test's size
        "model.backbone.hidden_size=32",
        "model.backbone.intermediate_size=64",
        "model.backbone.num_layers=1",
        "model.vit.width=32",
        "model.vit.depth=1",
        "model.diffusion.head_width=32",
        "model.diffusion.head_depth=1",
        "model.sampling.num_steps=2",
        "model.sampling.num_iter=2",
    ]
    args = ["quickstart", "--bench", "shapes", "--steps", "4", "--n-per-class", "1"]
    args += ["--tokenizer-set", "steps=2", "batch_size=2", "eval_images=4", "scale_images=4"]
    rc = main(
        [*args, "--out", str(out), "--set", "train.progress=false", "train.batch_size=8", *small]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["tokenizer"]["steps"] == 2 and (out / "vae" / "config.json").is_file()
    tok = read_config(out).image_tokenizer
    assert (tok.kind, tok.path, tok.patch_size) == ("diffusers", str((out / "vae").resolve()), 2)
    assert res["bench"] == "shapes" and res["train_steps"] == {"stage1": 2, "stage2": 2}
    assert set(res["targets"]) == {
        "t2i_overall_seen",
        "t2i_overall_heldout",
        "vqa_accuracy",
        "caption_exact",
    }
    for key in ("t2i_accuracy_seen", "t2i_accuracy_heldout", "caption_exact", "vqa_accuracy"):
        assert 0.0 <= res[key] <= 1.0, key
    assert res["n_generated"] == 10 and sum(res["vqa_n_per_kind"].values()) >= 10
    assert (out / "samples.png").is_file()
    run = load_preset("shapes_stage2", [])
    assert run.train.kinds.vqa > 0 and run.data.name == "shapes"


def test_final_model_card_carries_the_evaluation(tmp_path):
    """OUT as quickstart leaves it before its card: stage 2's final/ files (whose card says "not
    evaluated"), then the evaluation's samples.png; the card step adds the metrics (also in
    metrics.json) and shows the grid, and leaves the model and the grid as they were."""
    from helpers_model import tiny_model
    from mmar.pipelines.mmar import MMAR

    out = tmp_path / "qs"
    tiny_model().save_pretrained(out)
    assert "**Not evaluated**" in (out / "README.md").read_text()
    grid = Image.new("L", (32, 20), 200)
    grid.save(out / "samples.png")
    weights = (out / "model.safetensors").read_bytes()
    results = {"t2i_accuracy": 0.75, "train_steps": {"stage1": 2, "stage2": 2}, "bench": "mnist"}
    model = MMAR.from_pretrained(out)
    assert write_model_card(model, out, results) == out / "README.md"
    card = (out / "README.md").read_text()
    assert "Not evaluated" not in card and "already" not in card
    assert "| t2i_accuracy | 0.75 |" in card and "| train_steps.stage2 | 2 |" in card
    assert "![samples generated by this model](samples.png)" in card
    assert json.loads((out / "metrics.json").read_text()) == results
    assert Image.open(out / "samples.png").tobytes() == grid.tobytes()
    assert (out / "model.safetensors").read_bytes() == weights


def test_quickstart_tokenizer_options_are_for_shapes(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--tokenizer", "runs/kl"]) == 2
    assert "they are for --bench shapes" in capsys.readouterr().err


def test_quickstart_shapes_bad_set_fails_before_the_tokenizer_trains(tmp_path, capsys):
    out = tmp_path / "q"
    args = ["quickstart", "--bench", "shapes", "--out", str(out), "--steps", "2"]
    assert main([*args, "--set", "model.backbone.num_layers=0"]) == 2
    assert "num_layers" in capsys.readouterr().err
    assert not (out / "vae").exists()


def test_quickstart_refuses_existing_out(tmp_path, capsys):
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "x").write_text("keep me")
    assert main(["quickstart", "--steps", "2", "--out", str(tmp_path / "qs")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "qs" / "x").read_text() == "keep me"


def test_steps_note_says_what_to_expect_and_the_budget_that_fits():
    from mmar.cli.quickstart import BENCHES, steps_note

    mnist = BENCHES["mnist"]
    assert mnist.target_steps == 2600
    assert steps_note(mnist, 2600, 15.0) is None and steps_note(mnist, 2928, 15.0) is None
    # an AVX2 CPU: 1,617 steps in 15 minutes -> 15 * 2600 / 1617 = 24.1 -> 25 minutes
    note = steps_note(mnist, 1617, 15.0)
    assert note is not None and "1617 steps fit 15 minutes" in note
    assert "about 2600" in note and "--minutes 25`" in note
    # a job whose targets were never met names no budget
    assert BENCHES["shapes"].target_steps is None and steps_note(BENCHES["shapes"], 10, 30) is None
