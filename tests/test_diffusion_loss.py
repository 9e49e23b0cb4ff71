"""diffusion_loss: closed form at init, shapes, learning on a tiny fixed problem, raises."""

import pytest
import torch

from mmar.diffusion import DiffusionHead, NoiseSchedule, diffusion_loss, v_target

SCHED = NoiseSchedule(1000)


def test_loss_at_init_is_mean_square_target():
    # the head outputs 0 at init, so the loss is mean_d(target^2) for the same draws
    head = DiffusionHead(token_dim=3, cond_dim=5, width=16, depth=2)
    x0, cond = torch.randn(6, 3), torch.randn(6, 5)
    loss = diffusion_loss(head, x0, cond, SCHED, "v", torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 1000, (6,), generator=g)
    eps = torch.randn(6, 3, generator=g)
    expected = v_target(x0, eps, SCHED.ab(t)).pow(2).mean(-1)
    assert loss.shape == (6,) and loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)
    eps_loss = diffusion_loss(head, x0, cond, SCHED, "eps", torch.Generator().manual_seed(0))
    torch.testing.assert_close(eps_loss, eps.pow(2).mean(-1))


@pytest.mark.parametrize("kind", ["v", "eps", "x0"])
def test_loss_decreases_with_adam(kind):
    torch.manual_seed(0)  # parameter init only; every draw of the loss uses a generator
    head = DiffusionHead(token_dim=2, cond_dim=3, width=32, depth=2)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 2, generator=g).repeat(16, 1)  # 4 tokens x 16 noise draws
    cond = torch.randn(4, 3, generator=g).repeat(16, 1)

    def eval_loss():
        with torch.no_grad():
            return (
                diffusion_loss(head, x0, cond, SCHED, kind, torch.Generator().manual_seed(123))
                .mean()
                .item()
            )

    before = eval_loss()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(40):
        loss = diffusion_loss(head, x0, cond, SCHED, kind, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert torch.isfinite(torch.tensor(after)) and after < 0.5 * before


def test_wrong_shapes_raises():
    head = DiffusionHead(token_dim=3, cond_dim=5, width=8, depth=1)
    with pytest.raises(ValueError, match="same M"):
        diffusion_loss(head, torch.randn(4, 3), torch.randn(5, 5), SCHED)
    with pytest.raises(ValueError, match="parameterization must be one of"):
        diffusion_loss(head, torch.randn(4, 3), torch.randn(4, 5), SCHED, "foo")
