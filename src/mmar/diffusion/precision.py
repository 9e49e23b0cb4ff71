"""Why v-prediction: the bf16 error of each parameterisation (behind ``mmar precision``).

Oracle experiment. Draw x0 ~ N(0, 1) (the tokenizers scale latents to unit variance) and
eps ~ N(0, 1) in float64, form x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps, and give the conversion
the *exact* network output (eps, v or x0) rounded to bf16, as a head under bf16 autocast returns
it. Recover x0_hat in float64 and report RMSE(x0_hat - x0). bf16 keeps 8 significant bits, so
the output carries a relative error up to 2^-8 (its unit roundoff) and

    eps:  x0_hat = (x_t - sqrt(1-ab) eps_hat) / sqrt(ab)  ->  error ~ sqrt((1-ab)/ab) |d eps|
    v:    x0_hat = sqrt(ab) x_t - sqrt(1-ab) v_hat         ->  error ~ sqrt(1-ab) |d v| <= |d v|
    x0:   x0_hat = x0_hat                                   ->  error ~ |d x0|

eps explodes as ab -> 0 (~2e4 x at t = 999 of the cosine schedule); v and x0 stay at bf16
resolution (~1e-3).

DDIM error amplification. For eta = 0 one step t -> s is x_s = sqrt(ab_s) x0_hat +
sqrt(1-ab_s) eps_hat; the derivative of x_s with respect to the network output is

    eps-pred (x0_hat = (x_t - sqrt(1-ab_t) e)/sqrt(ab_t), eps_hat = e):
        d x_s / d e = sqrt(1-ab_s) - sqrt(ab_s) sqrt(1-ab_t)/sqrt(ab_t)
                    = sqrt(1-ab_s) - sqrt(ab_s (1-ab_t) / ab_t)
    v-pred (x0_hat = sqrt(ab_t) x_t - sqrt(1-ab_t) v, eps_hat = sqrt(1-ab_t) x_t + sqrt(ab_t) v):
        d x_s / d v = sqrt(1-ab_s) sqrt(ab_t) - sqrt(ab_s) sqrt(1-ab_t)

reported as absolute values for s = t - stride, stride = round((T-1)/(n-1)) the spacing of the
n-step grid (n = 50: stride 20), with ab_s = 1 past t = 0. For eps the first step from t = 999
multiplies the output error by ~630 (docs/performance.md); for v the factor is below 1 everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmar.diffusion.parameterization import predict_x0_and_eps, q_sample, training_target
from mmar.diffusion.schedule import NoiseSchedule

TABLE_TIMESTEPS = (0, 250, 500, 750, 900, 990, 999)


def bf16_x0_rmse(
    schedule: NoiseSchedule, timesteps: list[int], kind: str, x0: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """RMSE of x0 recovered from the exact ``kind`` output rounded to bf16 -> float64 (K,).

    x0, eps: float64 (N,) oracle samples, shared by every t.
    """
    ab = schedule.ab(torch.tensor(timesteps, device=schedule.device))  # (K, 1)
    x_t = q_sample(x0[None], eps[None], ab)  # (K, N)
    exact = training_target(kind, x0[None], eps[None], ab).expand_as(x_t)  # (K, N)
    rounded = exact.to(torch.bfloat16).to(torch.float64)  # (K, N)
    x0_hat, _ = predict_x0_and_eps(kind, rounded, x_t, ab)  # (K, N)
    return (x0_hat - x0[None]).pow(2).mean(dim=1).sqrt()  # (K,)


def ddim_amplification(
    schedule: NoiseSchedule, timesteps: list[int], kind: str, num_steps: int = 50
) -> torch.Tensor:
    """|d x_s / d output| of one eta = 0 DDIM step t -> s = t - stride -> float64 (K,)."""
    if kind not in ("eps", "v"):
        raise ValueError(f"ddim_amplification: kind must be 'eps' or 'v', got {kind!r}")
    T = schedule.num_timesteps
    stride = round((T - 1) / (num_steps - 1))
    t = torch.tensor(timesteps, device=schedule.device)
    s = t - stride
    ab_t = schedule.alphas_cumprod[t]  # (K,)
    ab_s = torch.where(
        s >= 0, schedule.alphas_cumprod[s.clamp(min=0)], torch.ones_like(ab_t)
    )  # (K,)
    if kind == "eps":
        d = (1 - ab_s).sqrt() - (ab_s * (1 - ab_t) / ab_t).sqrt()
    else:
        d = (1 - ab_s).sqrt() * ab_t.sqrt() - ab_s.sqrt() * (1 - ab_t).sqrt()
    return d.abs()


def precision_report(
    timesteps: Sequence[int] = TABLE_TIMESTEPS,
    samples: int = 65536,
    seed: int = 0,
    num_steps: int = 50,
    num_timesteps: int = 1000,
) -> dict[str, Any]:
    """``{"t", "rmse": {eps, v, x0}, "ddim_amplification": {eps, v}}`` as plain lists."""
    schedule = NoiseSchedule(num_timesteps)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(samples, generator=g, dtype=torch.float64)  # (N,)
    eps = torch.randn(samples, generator=g, dtype=torch.float64)  # (N,)
    ts = list(timesteps)
    # chunks of t keep the (K, N) float64 intermediates small for a dense grid
    chunks = [ts[i : i + 64] for i in range(0, len(ts), 64)]
    rmse = {
        k: torch.cat([bf16_x0_rmse(schedule, c, k, x0, eps) for c in chunks]).tolist()
        for k in ("eps", "v", "x0")
    }
    amp = {k: ddim_amplification(schedule, ts, k, num_steps).tolist() for k in ("eps", "v")}
    return {"t": ts, "rmse": rmse, "ddim_amplification": amp}


def format_table(report: dict, num_timesteps: int = 1000) -> str:
    """A fixed-width text table of a :func:`precision_report`."""
    ab = NoiseSchedule(num_timesteps).alphas_cumprod
    head = (
        f"{'t':>5} {'alpha_bar':>10} | {'rmse eps':>10} {'rmse v':>10} {'rmse x0':>10} | "
        f"{'ddim amp eps':>12} {'ddim amp v':>10}"
    )
    lines = [
        "x0 RMSE from the exact output rounded to bf16; DDIM (eta=0, 50 steps) |d x_s / d output|",
        head,
        "-" * len(head),
    ]
    r, a = report["rmse"], report["ddim_amplification"]
    for i, t in enumerate(report["t"]):
        lines.append(
            f"{t:>5} {ab[t].item():>10.3e} | {r['eps'][i]:>10.3e} {r['v'][i]:>10.3e} "
            f"{r['x0'][i]:>10.3e} | {a['eps'][i]:>12.3e} {a['v'][i]:>10.3e}"
        )
    return "\n".join(lines)


def plot_precision(
    path: str, samples: int = 16384, seed: int = 0, num_steps: int = 50, num_timesteps: int = 1000
) -> None:
    """Log-scale plot of :func:`precision_report` over every t to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    rep = precision_report(range(num_timesteps), samples, seed, num_steps, num_timesteps)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for k in ("eps", "v", "x0"):
        ax1.semilogy(rep["t"], rep["rmse"][k], label=f"{k}-prediction")
    ax1.axhline(2.0**-8, color="gray", ls=":", label="bf16 unit roundoff 2^-8")
    ax1.set(xlabel="t", ylabel="RMSE of x0_hat", title="exact output rounded to bf16")
    for k in ("eps", "v"):
        ax2.semilogy(rep["t"], rep["ddim_amplification"][k], label=f"{k}-prediction")
    ax2.axhline(1.0, color="gray", ls=":")
    stride = round((num_timesteps - 1) / (num_steps - 1))
    ax2.set(
        xlabel="t",
        ylabel="|d x_s / d output|",
        title=f"DDIM eta=0 step t -> t-{stride} ({num_steps}-step grid)",
    )
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
