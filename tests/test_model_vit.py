import pytest
import torch

from helpers_model import one_thread  # noqa: F401 (fixture)
from mmar.model.config import ViTConfig
from mmar.model.embedding_vit import EmbeddingViT, sincos_2d


@pytest.mark.parametrize("pos_emb", ["learned", "sincos"])
def test_shapes_and_grad(pos_emb):
    torch.manual_seed(0)
    vit = EmbeddingViT(
        4, ViTConfig(width=32, depth=2, num_heads=2, pos_emb=pos_emb), 16, (4, 4), 48
    )
    x = torch.randn(3, 16, 4, requires_grad=True)
    y = vit(x)
    assert y.shape == (3, 16, 48)
    y.sum().backward()
    assert x.grad.abs().sum() > 0


def test_bidirectional_every_token_sees_every_other():
    torch.manual_seed(0)
    vit = EmbeddingViT(4, ViTConfig(width=32, depth=1, num_heads=2), 16, (4, 4), 32)
    x = torch.randn(1, 16, 4, requires_grad=True)
    vit(x)[0, 0].sum().backward()  # output 0 depends on the LAST input token too
    assert x.grad[0, -1].abs().sum() > 0


def test_sincos_2d_closed_form():
    e = sincos_2d(8, (2, 3))  # (6, 8): 4 channels row, 4 column
    assert e.shape == (6, 8)
    # token (1, 2): row part [sin(1), sin(1e-2), cos(1), cos(1e-2)], column part at 2
    row = torch.tensor([1.0, 1.0]) * torch.tensor([1.0, 1e-2])
    col = torch.tensor([2.0, 2.0]) * torch.tensor([1.0, 1e-2])
    expected = torch.cat([row.sin(), row.cos(), col.sin(), col.cos()])
    assert torch.allclose(e[1 * 3 + 2], expected, atol=1e-6)


def test_autocast_bf16():
    vit = EmbeddingViT(4, ViTConfig(width=32, depth=1, num_heads=2), 16, (4, 4), 32)
    with torch.autocast("cpu", torch.bfloat16):
        y = vit(torch.randn(2, 16, 4))
    assert torch.isfinite(y.float()).all()


def test_wrong_token_count_raises():
    vit = EmbeddingViT(4, ViTConfig(width=32, depth=1, num_heads=2), 16, (4, 4), 32)
    with pytest.raises(ValueError, match=r"\(B, 16, D\)"):
        vit(torch.randn(2, 9, 4))
