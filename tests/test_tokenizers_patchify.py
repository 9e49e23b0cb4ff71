"""patchify / unpatchify: closed-form token order, exact inverses, clear errors."""

import pytest
import torch

from mmar.tokenizers import patchify, unpatchify


def test_patchify_token_order_closed_form():
    # latents[b, c, y, x] = 100 c + 10 y + x: every value names its position
    c, h, w, p = 2, 4, 6, 2
    cc, yy, xx = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
    latents = (100 * cc + 10 * yy + xx).float()[None]  # (1, 2, 4, 6)
    tokens = patchify(latents, p)  # (1, N=2*3, D=2*2*2)
    assert tokens.shape == (1, 6, 8)
    # token n = i * (w/p) + j, row-major; D index = c*p*p + di*p + dj
    for i in range(h // p):
        for j in range(w // p):
            n = i * (w // p) + j
            for ch in range(c):
                for di in range(p):
                    for dj in range(p):
                        expected = 100 * ch + 10 * (i * p + di) + (j * p + dj)
                        assert tokens[0, n, ch * p * p + di * p + dj].item() == expected


@pytest.mark.parametrize("p", [1, 2, 4])
def test_patchify_roundtrip(p, generator):
    latents = torch.randn(3, 5, 8, 16, generator=generator)
    tokens = patchify(latents, p)
    assert tokens.shape == (3, (8 // p) * (16 // p), 5 * p * p)
    assert torch.equal(unpatchify(tokens, p, 8, 16), latents)
    assert torch.equal(patchify(unpatchify(tokens, p, 8, 16), p), tokens)


def test_patchify_p1_is_flatten(generator):
    latents = torch.randn(2, 3, 4, 4, generator=generator)
    assert torch.equal(patchify(latents, 1), latents.flatten(2).transpose(1, 2))


def test_patchify_raises_on_indivisible_size():
    with pytest.raises(ValueError, match=r"\(6, 6\).*divisible.*p = 4"):
        patchify(torch.zeros(1, 2, 6, 6), 4)


def test_unpatchify_raises_on_wrong_token_count():
    with pytest.raises(ValueError, match="N = 4"):
        unpatchify(torch.zeros(1, 5, 8), 2, 4, 4)
