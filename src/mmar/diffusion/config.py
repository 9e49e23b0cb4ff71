"""DiffusionConfig: the per-token diffusion process and its MLP head (DESIGN.md §4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmar.config import Config, check


@dataclass
class DiffusionConfig(Config):
    """Schedule, parameterisation, head size and sampler of the diffusion head.

    ``parameterization`` and ``sampler`` are config values so that the paper's v- vs
    eps-prediction ablation can be rerun by changing one line.
    """

    num_timesteps: int = 1000                            # T of the training process
    schedule: Literal["cosine"] = "cosine"               # IDDPM cosine alpha_bar
    parameterization: Literal["v", "eps", "x0"] = "v"    # what the head predicts
    head_width: int = 256                                # W of the MLP head
    head_depth: int = 3                                  # number of AdaLN residual blocks
    diffusion_batch_mul: int = 4                         # noise draws per condition z_i
    sampler: Literal["ddim", "ddpm"] = "ddim"
    num_sampling_steps: int = 50                         # respaced steps at sampling
    eta: float = 0.0                                     # DDIM stochasticity (0 = deterministic)
    temperature: float = 1.0                             # tau: scales the injected noise

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        check(self.num_timesteps >= 2, f"{name}.num_timesteps",
              f"must be >= 2, got {self.num_timesteps}; e.g. num_timesteps: 1000")
        check(self.schedule in ("cosine",), f"{name}.schedule",
              f"must be 'cosine', got {self.schedule!r}")
        check(self.parameterization in ("v", "eps", "x0"), f"{name}.parameterization",
              f"must be one of 'v', 'eps', 'x0', got {self.parameterization!r}; "
              "e.g. parameterization: v")
        check(self.head_width >= 1, f"{name}.head_width",
              f"must be >= 1, got {self.head_width}; e.g. head_width: 256")
        check(self.head_depth >= 1, f"{name}.head_depth",
              f"must be >= 1, got {self.head_depth}; e.g. head_depth: 3")
        check(self.diffusion_batch_mul >= 1, f"{name}.diffusion_batch_mul",
              f"must be >= 1, got {self.diffusion_batch_mul}; e.g. diffusion_batch_mul: 4")
        check(self.sampler in ("ddim", "ddpm"), f"{name}.sampler",
              f"must be 'ddim' or 'ddpm', got {self.sampler!r}")
        check(1 <= self.num_sampling_steps <= self.num_timesteps, f"{name}.num_sampling_steps",
              f"must be in [1, num_timesteps={self.num_timesteps}], got "
              f"{self.num_sampling_steps}; e.g. num_sampling_steps: 50")
        check(0.0 <= self.eta <= 1.0, f"{name}.eta",
              f"must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like), got {self.eta}")
        check(self.temperature >= 0.0, f"{name}.temperature",
              f"must be >= 0, got {self.temperature}; e.g. temperature: 1.0")
