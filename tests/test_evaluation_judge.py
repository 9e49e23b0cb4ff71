"""The judge CNN (trained on MNIST's training split, cached) and the digit metrics built on it."""

import pytest
import torch

from mmar.data import DataConfig
from mmar.data.images import pil_to_tensor, tensor_to_pil
from mmar.evaluation import metrics
from mmar.evaluation.evaluate import load_split
from mmar.evaluation.judge import JudgeConfig, get_judge, load_judge

SIZE = 28


@pytest.fixture(scope="module")
def mnist():
    cfg = DataConfig(name="mnist", image_size=SIZE)
    return {split: load_split(cfg, split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("judges")


@pytest.fixture(scope="module")
def judge(mnist, cache_dir):
    def split(name):
        calls.append(name)
        return mnist[name]["images"], mnist[name]["labels"]

    calls = []
    j = get_judge(JudgeConfig(dataset="mnist", image_size=SIZE), split, cache_dir)
    j.calls = calls
    return j


def test_judge_trains_on_train_split_to_95_percent(judge):
    assert judge.calls == ["train", "test"]  # trained on train, scored on the held-out split
    assert judge.from_cache is False
    assert judge.heldout_accuracy >= 0.95


def test_judge_is_cached_as_safetensors_and_reused(judge, mnist, cache_dir):
    path = judge.cache_path
    assert path.parent == cache_dir and path.suffix == ".safetensors"
    assert path.name.startswith(f"mnist-{SIZE}-")

    def no_training(name):
        raise AssertionError("a cached judge must not be retrained")

    again = get_judge(JudgeConfig(dataset="mnist", image_size=SIZE), no_training, cache_dir)
    assert again.from_cache and again.heldout_accuracy == judge.heldout_accuracy
    x = mnist["test"]["images"][:64]
    torch.testing.assert_close(again.features(x), judge.features(x))
    # a different config is a different file
    assert JudgeConfig(dataset="mnist", image_size=SIZE, seed=1).cache_key() != path.stem


def test_judge_cache_respects_xdg_cache_home(tmp_path, monkeypatch, judge):
    from mmar.evaluation.judge import judge_cache_dir, save_judge

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert judge_cache_dir() == tmp_path / "mmar" / "judges"
    save_judge(judge, judge_cache_dir() / "j.safetensors")
    assert (
        load_judge(judge_cache_dir() / "j.safetensors").heldout_accuracy == judge.heldout_accuracy
    )


def test_judge_features_and_predict_shapes(judge, mnist):
    x = mnist["test"]["images"][:5]
    assert judge.features(x).shape == (5, judge.config.feature_dim)
    assert judge.predict(x).shape == (5,) and judge.predict(x).dtype == torch.long


def test_judge_raises_on_wrong_image_size(judge):
    with pytest.raises(ValueError, match=r"expected images \(B, 1, 28, 28\)"):
        judge.predict(torch.zeros(2, 1, 32, 32))


def test_judge_config_raises_on_bad_field():
    with pytest.raises(ValueError, match="JudgeConfig.epochs"):
        JudgeConfig(epochs=0).validate()


def test_t2i_accuracy_of_real_images_is_judge_accuracy(judge, mnist):
    test = mnist["test"]
    res = metrics.t2i_digit_accuracy(judge, test["images"], test["labels"])
    assert res["accuracy"] == pytest.approx(judge.heldout_accuracy, abs=1e-6)
    assert len(res["per_digit"]) == 10 and min(res["per_digit"]) > 0.8
    shuffled = (test["labels"] + 1) % 10  # wrong labels: accuracy collapses
    assert metrics.t2i_digit_accuracy(judge, test["images"], shuffled)["accuracy"] < 0.2


def test_classifier_fid_real_vs_real_small_vs_noise_large(judge, mnist):
    g = torch.Generator().manual_seed(0)
    x = mnist["test"]["images"][torch.randperm(1000, generator=g)]
    real_a, real_b = x[:400], x[400:800]
    noise = torch.rand(400, 1, SIZE, SIZE, generator=g) * 2 - 1
    floor = metrics.classifier_fid(judge, real_a, real_b)
    far = metrics.classifier_fid(judge, real_a, noise)
    assert floor >= 0 and far > 20 * floor
    # only zeros generated: also far from real
    assert (
        metrics.classifier_fid(judge, real_a, torch.full_like(noise, -1) + 0.01 * noise)
        > 20 * floor
    )


def test_digit_prompts_name_each_digit():
    prompts, labels = metrics.digit_prompts(3)
    assert len(prompts) == 30 and labels == [d for d in range(10) for _ in range(3)]
    from mmar.data import parse_digit

    assert [parse_digit(p) for p in prompts] == labels
    assert len(set(prompts[:3])) == 3  # templates cycle within a digit


def test_caption_digit_accuracy():
    caps = ["a handwritten digit seven", "the number 3", "nothing", "one and two"]
    assert metrics.caption_digit_accuracy(caps, [7, 3, 1, 1]) == 0.5
    with pytest.raises(ValueError, match="2 captions for 3 labels"):
        metrics.caption_digit_accuracy(caps[:2], [1, 2, 3])


def test_pil_round_trip_matches_tensor(mnist):
    x = mnist["test"]["images"][:4]
    back = pil_to_tensor(tensor_to_pil(x), channels=1)
    assert back.shape == x.shape and (back - x).abs().max() < 1 / 127


class FakeDigitModel:
    """A stand-in with MMAR's evaluation interface: "generates" a training image of the prompted
    digit (or noise), captions everything as a seven, and has a fixed NLL of 2 nats per token."""

    def __init__(self, train, noise=False):
        from types import SimpleNamespace

        from mmar.model.config import SamplingConfig
        from mmar.tokenizers.config import ImageTokenizerConfig

        self.config = SimpleNamespace(
            image_tokenizer=ImageTokenizerConfig(image_size=SIZE, image_channels=1)
        )
        self.sampling = SamplingConfig()
        self.model = torch.nn.Module()  # evaluate() puts it in eval mode and back
        self.train_split, self.noise, self.device = train, noise, torch.device("cpu")
        self.calls = {}

    def generate_images(self, prompts, sampling, seed):
        from mmar.data import parse_digit

        assert not self.model.training
        self.calls["generate"] = {"seed": seed, "sampling": sampling}
        g = torch.Generator().manual_seed(seed)
        labels = self.train_split["labels"]
        out = []
        for p in prompts:
            pool = (labels == parse_digit(p)).nonzero()[:, 0]
            x = self.train_split["images"][pool[torch.randint(len(pool), (1,), generator=g)]]
            out.append(torch.rand(x.shape, generator=g) * 2 - 1 if self.noise else x)
        return tensor_to_pil(torch.cat(out))

    def caption(self, images, sampling):
        return ["a handwritten digit seven"] * len(images)

    def text_nll(self, images, texts):
        assert images.shape == (len(texts), 1, SIZE, SIZE)
        return 2.0 * 3 * len(texts), 3 * len(texts)


def test_evaluate_digits_with_a_fake_model(mnist, cache_dir, judge):
    from mmar.evaluation import evaluate, format_results
    from mmar.model.config import SamplingConfig

    model = FakeDigitModel(mnist["train"])
    sampling = SamplingConfig(num_iter=4, guidance_scale=2.0)
    res = evaluate(
        model,
        "mnist",
        n_per_class=10,
        seed=3,
        sampling=sampling,
        judge_cache_dir=cache_dir,
        log=None,
    )
    assert model.model.training  # the mode is restored
    assert model.calls["generate"] == {"seed": 3, "sampling": sampling}
    assert res["judge_from_cache"] and res["judge_heldout_accuracy"] == judge.heldout_accuracy
    assert (
        res["n_generated"] == 100 and res["n_real_reference"] == 100 and res["n_captioned"] == 100
    )
    assert res["t2i_accuracy"] >= 0.9
    assert 0.05 <= res["caption_accuracy"] <= 0.15  # only the sevens (10 +- sampling) are right
    assert res["text_nll_nats_per_token"] == pytest.approx(2.0)
    assert res["sampling"] == sampling.to_dict() and res["images_per_second"] > 0
    noisy = evaluate(
        FakeDigitModel(mnist["train"], noise=True),
        "mnist",
        n_per_class=10,
        seed=3,
        judge_cache_dir=cache_dir,
        log=None,
    )
    assert noisy["sampling"] == SamplingConfig().to_dict()  # default: the model's own
    assert noisy["classifier_fid"] > 10 * res["classifier_fid"]
    assert noisy["classifier_fid_real_floor"] == res["classifier_fid_real_floor"]  # same real sets
    assert res["classifier_fid"] < 3 * res["classifier_fid_real_floor"]
    table = format_results(res)
    assert "classifier-FID (judge features)" in table and "judge held-out acc" in table
    assert "ddim steps=50 eta" in table  # SamplingConfig's defaults
    annealed = {**res, "sampling": {**res["sampling"], "num_steps": 25, "num_steps_final": 5}}
    assert "ddim steps=25>5 eta" in format_results(annealed)  # the annealing is shown


def test_multilabel_judge_learns_a_set_of_classes(tmp_path):
    """labels: "multi": a multi-hot target per image (BCE), accuracy = whole set right."""
    g = torch.Generator().manual_seed(0)
    n, k = 600, 3
    target = torch.rand(n, k, generator=g) < 0.5  # (N, K): which of 3 bright stripes is lit
    x = torch.full((n, 1, 8, 8), -1.0)
    for c in range(k):
        x[target[:, c], 0, 2 * c + 1] = 1.0
    cfg = JudgeConfig(dataset="stripes", image_size=8, num_classes=k, labels="multi", epochs=4)
    j = get_judge(
        cfg,
        lambda split: (x[:500], target[:500]) if split == "train" else (x[500:], target[500:]),
        tmp_path,
    )
    assert j.predict(x[500:]).shape == (100, k) and j.predict(x[500:]).dtype == torch.bool
    assert j.heldout_accuracy >= 0.95
    assert load_judge(j.cache_path).config.labels == "multi"
