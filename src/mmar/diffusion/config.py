"""DiffusionConfig: the per-token diffusion process and its MLP head (docs/method.md §4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmar.config import Config, check


@dataclass
class DiffusionConfig(Config):
    """Schedule, parameterisation and head size of the diffusion head (training-time facts).

    ``parameterization`` is a config value so that the paper's v- vs eps-prediction ablation can
    be rerun by changing one line. How to sample (scheduler, steps, eta, temperature) is the
    model's ``SamplingConfig`` (mmar.model.config).
    """

    num_timesteps: int = 1000  # T of the training process
    schedule: Literal["cosine"] = "cosine"  # IDDPM cosine alpha_bar
    parameterization: Literal["v", "eps", "x0"] = "v"  # what the head predicts
    head_width: int = 256  # W of the MLP head
    head_depth: int = 3  # number of AdaLN residual blocks
    diffusion_batch_mul: int = 4  # noise draws per condition z_i

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        check(
            self.num_timesteps >= 2,
            f"{name}.num_timesteps",
            f"must be >= 2, got {self.num_timesteps}; e.g. num_timesteps: 1000",
        )
        check(
            self.schedule in ("cosine",),
            f"{name}.schedule",
            f"must be 'cosine', got {self.schedule!r}",
        )
        check(
            self.parameterization in ("v", "eps", "x0"),
            f"{name}.parameterization",
            f"must be one of 'v', 'eps', 'x0', got {self.parameterization!r}; "
            "e.g. parameterization: v",
        )
        check(
            self.head_width >= 1,
            f"{name}.head_width",
            f"must be >= 1, got {self.head_width}; e.g. head_width: 256",
        )
        check(
            self.head_depth >= 1,
            f"{name}.head_depth",
            f"must be >= 1, got {self.head_depth}; e.g. head_depth: 3",
        )
        check(
            self.diffusion_batch_mul >= 1,
            f"{name}.diffusion_batch_mul",
            f"must be >= 1, got {self.diffusion_batch_mul}; e.g. diffusion_batch_mul: 4",
        )
