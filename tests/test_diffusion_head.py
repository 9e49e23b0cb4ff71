"""DiffusionHead: shapes, AdaLN-zero init, shared-t path, bf16 autocast, raises."""

import pytest
import torch

from mmar.diffusion import DiffusionHead
from mmar.diffusion.head import timestep_embedding


def randomised_head(seed=0, **kw):
    """A head whose zero-initialised layers are filled so that every path matters."""
    head = DiffusionHead(**{"token_dim": 4, "cond_dim": 6, "width": 16, "depth": 2, **kw})
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return head


def test_output_shape_and_zero_at_init():
    head = DiffusionHead(token_dim=4, cond_dim=6, width=16, depth=3)
    x, c = torch.randn(5, 4), torch.randn(5, 6)
    out = head(x, torch.randint(0, 1000, (5,)), c)
    assert out.shape == (5, 4)
    assert torch.equal(out, torch.zeros(5, 4))  # AdaLN-zero: exactly 0
    assert len(head.blocks) == 3 and head.input_proj.in_features == 4


def test_zero_init_still_trains_the_output_layer():
    head = DiffusionHead(token_dim=4, cond_dim=6, width=16, depth=2)
    head(torch.randn(5, 4), torch.full((5,), 10), torch.randn(5, 6)).sum().backward()
    assert head.final_layer.linear.bias.grad.abs().sum() > 0


def test_shared_scalar_t_equals_per_row_t():
    head = randomised_head()
    x, c = torch.randn(7, 4), torch.randn(7, 6)
    per_row = head(x, torch.full((7,), 321), c)
    torch.testing.assert_close(head(x, 321, c), per_row, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head(x, torch.tensor(321), c), per_row, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(head(x, 320, c), per_row)  # t is actually used


def test_timestep_embedding_closed_form():
    e = timestep_embedding(torch.tensor([0, 3]), dim=8)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    # first frequency is 1: cos(3), sin(3)
    assert e[1, 0].item() == pytest.approx(torch.cos(torch.tensor(3.0)).item(), abs=1e-6)
    assert e[1, 4].item() == pytest.approx(torch.sin(torch.tensor(3.0)).item(), abs=1e-6)


def test_bf16_autocast_runs():
    head = randomised_head()
    x, c = torch.randn(3, 4), torch.randn(3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x, 5, c)
    torch.testing.assert_close(out.float(), head(x, 5, c), atol=0.1, rtol=0.05)


def test_wrong_shapes_raises():
    head = DiffusionHead(token_dim=4, cond_dim=6, width=8, depth=1)
    with pytest.raises(ValueError, match=r"x_t must be \(M, 4\)"):
        head(torch.randn(3, 5), 0, torch.randn(3, 6))
    with pytest.raises(ValueError, match=r"cond must be \(3, 6\)"):
        head(torch.randn(3, 4), 0, torch.randn(2, 6))
    with pytest.raises(ValueError, match="t must be"):
        head(torch.randn(3, 4), torch.zeros(2, dtype=torch.long), torch.randn(3, 6))
    with pytest.raises(ValueError, match="width"):
        DiffusionHead(4, 6, width=0)
