"""mmar.diffusion: the per-token diffusion process (pure math) and the MLP head (docs/method.md §4).

schedule (cosine alpha_bar, float64) -> parameterization (eps <-> v <-> x0) -> loss (training)
and schedulers (DDIM / DDPM steps) -> sampling (the head's loop with CFG); head is the network;
precision is the bf16 analysis behind ``mmar precision``.
"""

from mmar.diffusion.config import DiffusionConfig
from mmar.diffusion.head import DiffusionHead
from mmar.diffusion.loss import diffusion_loss
from mmar.diffusion.parameterization import (
    PARAMETERIZATIONS,
    eps_from_v,
    eps_from_x0,
    predict_x0_and_eps,
    q_sample,
    training_target,
    v_target,
    x0_from_eps,
    x0_from_v,
)
from mmar.diffusion.sampling import noise_draws, sample_tokens
from mmar.diffusion.schedule import NoiseSchedule, cosine_alpha_bar
from mmar.diffusion.schedulers import (
    SCHEDULERS,
    TIMESTEP_SPACINGS,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverPP2MScheduler,
    NoiseScheduler,
    build_noise_scheduler,
    timestep_grid,
)

__all__ = [
    "PARAMETERIZATIONS",
    "SCHEDULERS",
    "TIMESTEP_SPACINGS",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverPP2MScheduler",
    "DiffusionConfig",
    "DiffusionHead",
    "NoiseSchedule",
    "NoiseScheduler",
    "build_noise_scheduler",
    "cosine_alpha_bar",
    "diffusion_loss",
    "eps_from_v",
    "eps_from_x0",
    "noise_draws",
    "predict_x0_and_eps",
    "q_sample",
    "sample_tokens",
    "timestep_grid",
    "training_target",
    "v_target",
    "x0_from_eps",
    "x0_from_v",
]
