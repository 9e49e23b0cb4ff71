"""`mmar eval` end to end on a tiny random MMAR checkpoint."""

import json

import pytest
import torch

from mmar.cli import main

DIGIT_KEYS = {
    "dataset",
    "image_size",
    "seed",
    "n_per_class",
    "sampling",
    "judge_heldout_accuracy",
    "judge_from_cache",
    "judge_path",
    "n_generated",
    "images_per_second",
    "t2i_accuracy",
    "t2i_accuracy_per_digit",
    "classifier_fid",
    "classifier_fid_real_floor",
    "n_real_reference",
    "n_captioned",
    "caption_examples",
    "caption_accuracy",
    "text_nll_nats_per_token",
    "timings",
    "model",
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from mmar.data import DataConfig, corpus
    from mmar.model.config import tiny_config
    from mmar.pipelines.mmar import MMAR

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MMAR.from_config(tiny_config(), corpus(DataConfig(name="mnist")))
    out = tmp_path_factory.mktemp("tiny") / "final"
    model.save_pretrained(out)
    return out


def test_eval_cli_writes_json_with_every_metric(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "res.json"
    rc = main(
        [
            "eval",
            "--model",
            str(tiny_checkpoint),
            "--n-per-class",
            "1",
            "--num-iter",
            "2",
            "--num-steps",
            "2",
            "--guidance-scale",
            "2.0",
            "--max-new-tokens",
            "4",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert set(res) >= DIGIT_KEYS
    assert res["dataset"] == "mnist" and res["image_size"] == 8  # no recorded data -> mnist
    # the flags given, the checkpoint's recommended values for the rest
    assert res["sampling"] == {
        **tiny_config_sampling(),
        "num_iter": 2,
        "num_steps": 2,
        "guidance_scale": 2.0,
        "max_new_tokens": 4,
    }
    assert res["n_generated"] == 10
    assert 0 <= res["t2i_accuracy"] <= 1 and res["classifier_fid"] >= 0
    assert res["text_nll_nats_per_token"] > 0 and res["images_per_second"] > 0
    assert res["judge_heldout_accuracy"] > 0.5 and not res["judge_from_cache"]
    assert list((tmp_path / "cache" / "mmar" / "judges").glob("mnist-8-*.safetensors"))
    table = capsys.readouterr().out
    assert "classifier-FID (judge features)" in table and "judge held-out accuracy" in table


def tiny_config_sampling():
    from mmar.model.config import tiny_config

    return tiny_config().sampling.to_dict()


def test_eval_cli_uses_recorded_training_data(tiny_checkpoint, capsys):
    from mmar.cli.eval import recorded_dataset

    assert recorded_dataset(tiny_checkpoint) is None
    run_yaml = tiny_checkpoint.parent / "config.yaml"  # what `mmar train` writes next to final/
    try:
        run_yaml.write_text("data:\n  name: shapes\n  image_size: 8\n")
        assert recorded_dataset(tiny_checkpoint) == {"name": "shapes", "image_size": 8}
        # the tiny model makes grey 8 px images: shapes cannot be scored on it, and eval says why
        assert main(["eval", "--model", str(tiny_checkpoint), "--n-per-class", "1"]) == 2
        assert "DataConfig.image_size" in capsys.readouterr().err
        run_yaml.write_text("data:\n  name: folder\n  path: imgs\n")
        assert main(["eval", "--model", str(tiny_checkpoint)]) == 2
        assert "trained on 'folder'" in capsys.readouterr().err
    finally:
        run_yaml.unlink()


def test_recorded_dataset_reads_checkpoint_trainer_state(tmp_path):
    from mmar.cli.eval import recorded_dataset

    (tmp_path / "trainer_state").mkdir()
    (tmp_path / "trainer_state" / "state.json").write_text(
        json.dumps({"step": 3, "run_config": {"data": {"name": "digits", "image_size": 16}}})
    )
    assert recorded_dataset(tmp_path) == {"name": "digits", "image_size": 16}


def test_eval_cli_raises_on_missing_checkpoint(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path)]) == 2
    assert "not a checkpoint" in capsys.readouterr().err
