"""MMARProcessor: packing, CFG prompt dropout, image rows, conversions, and its checkpoint part
(the image tokenizer's weights travel with the model)."""

import pytest
import torch

from helpers_model import CORPUS, one_thread, random_images, tiny_model  # noqa: F401 (fixture)
from mmar.model.config import tiny_config
from mmar.model.processor import MMARProcessor
from mmar.tokenizers.config import ImageTokenizerConfig
from test_tokenizers_image import save_tiny_vae


@pytest.fixture(scope="module")
def processor():
    return tiny_model().processor


def test_pack_drops_only_t2i_prompts(processor):
    texts, kinds = ["digit one", "digit one", "digit seven"], ["t2i", "t2i", "i2t"]
    kept = processor.pack(texts, kinds)
    dropped = processor.pack(texts, kinds, drop_prompt=[True, False, True])
    n_words = (kept.labels != -100).sum(1)  # CE targets per sample
    assert n_words.tolist() == [2, 2, 3]  # prompt words; words + eos
    assert (dropped.labels != -100).sum(1).tolist() == [0, 2, 3]  # i2t captions never dropped
    assert dropped.generative.tolist() == [True, True, False]


def test_dropout_rate_and_one_draw_per_sample(processor):
    kinds = ["t2i"] * 4000 + ["i2t"] * 1000
    gens = [torch.Generator().manual_seed(i) for i in range(len(kinds))]
    drop = processor.draw_prompt_dropout(kinds, gens)
    assert not any(drop[4000:])  # only t2i prompts drop
    assert sum(drop[:4000]) / 4000 == pytest.approx(0.1, abs=0.015)  # tiny_config: 0.1
    again = [torch.Generator().manual_seed(i) for i in range(len(kinds))]
    assert processor.draw_prompt_dropout(kinds, again) == drop  # a function of the seed


def test_call_keeps_image_rows_of_image_samples(processor):
    x = random_images(3)
    inputs = processor(["a", "digit one", "b"], ["t2i", "text", "i2t"], images=x)
    assert torch.equal(inputs.images, x[[0, 2]]) and inputs.latents is None
    assert processor(["a"], ["text"], images=None).images is None
    with pytest.raises(ValueError, match="3 samples need one image"):
        processor(["a", "b", "c"], ["t2i", "i2t", "img"], images=x[:2])
    with pytest.raises(ValueError, match=r"\(B, 1, 8, 8\)"):
        processor(["a"], ["t2i"], images=torch.zeros(1, 3, 8, 8))


def test_pack_raises_on_bad_kinds(processor):
    with pytest.raises(ValueError, match="kinds"):
        processor.pack(["a", "b"], ["t2i", "video"])
    with pytest.raises(ValueError, match="one text per sample"):
        processor.pack(["a"], ["t2i", "i2t"])
    with pytest.raises(TypeError, match="list of strings"):
        processor.encode_texts("a red circle")


def test_encode_decode_round_trip_and_pil(processor):
    x = random_images(2)
    tokens = processor.encode_images(x)
    assert tokens.shape == (2, 16, 4)
    assert torch.allclose(processor.decode_tokens(tokens), x, atol=1e-6)
    pil = processor.postprocess(x)
    back = processor.preprocess(pil)
    assert (back - x).abs().max() <= 1 / 255 + 1e-6  # 8-bit rounding only


def test_truncates_texts(processor):
    long = " ".join(["digit"] * 40)
    assert len(processor.encode_texts([long])[0]) == 16  # tiny_config: max_text_len


def test_checkpoint_carries_the_image_tokenizer_weights(tmp_path):
    """A VAE's weights are saved with the processor and win over the VAE directory's, so a model
    decodes with exactly the VAE it was trained with."""
    import json

    from mmar.tokenizers import build_image_tokenizer

    vae_dir = tmp_path / "vae"
    save_tiny_vae(vae_dir)
    cfg = tiny_config(
        image_tokenizer=ImageTokenizerConfig(
            kind="diffusers", path=str(vae_dir), image_size=8, image_channels=3, patch_size=1
        )
    )
    processor = MMARProcessor.from_config(cfg, CORPUS)
    ckpt = tmp_path / "ckpt"
    processor.save_pretrained(ckpt)
    (ckpt / "config.json").write_text(json.dumps(cfg.to_dict()))  # the model's part of a checkpoint
    assert (ckpt / "image_tokenizer.safetensors").is_file()
    with torch.no_grad():  # the VAE directory changes after training
        changed = build_image_tokenizer(cfg.image_tokenizer)
        for p in changed.parameters():
            p.mul_(2.0)
    changed.vae.save_pretrained(str(vae_dir))
    trained = processor.image_tokenizer.state_dict()
    loaded = MMARProcessor.from_pretrained(ckpt).image_tokenizer.state_dict()
    assert trained.keys() == loaded.keys()
    assert all(torch.equal(trained[k], loaded[k]) for k in trained)
    fresh = build_image_tokenizer(cfg.image_tokenizer).state_dict()
    assert any(not torch.equal(fresh[k], loaded[k]) for k in fresh)
    assert MMARProcessor.from_pretrained(ckpt).special == processor.special


def test_understanding_encodes_with_the_posterior_mode(tmp_path):
    """A VAE trained with posterior "sample": training draws from the generator given, while
    captioning (no generator) reads the posterior mode, so an image means one thing."""
    vae_dir = tmp_path / "vae"
    save_tiny_vae(vae_dir)
    tok = ImageTokenizerConfig(
        kind="diffusers",
        path=str(vae_dir),
        image_size=8,
        image_channels=3,
        patch_size=1,
        posterior="sample",
    )
    processor = MMARProcessor.from_config(tiny_config(image_tokenizer=tok), CORPUS)
    x = random_images(2, c=3)
    mode = processor.image_tokenizer.encode(x, posterior="mode")
    assert torch.equal(processor.encode_images(x), processor.encode_images(x))
    assert torch.allclose(processor.encode_images(x), mode.permute(0, 2, 3, 1).flatten(1, 2))
    g = torch.Generator().manual_seed(0)
    drawn = processor.encode_images(x, generator=g)
    assert not torch.allclose(drawn, processor.encode_images(x))
