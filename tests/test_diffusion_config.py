"""DiffusionConfig: defaults, round trip, and range checks naming the field."""

import pytest

from mmar.config import ConfigError
from mmar.diffusion import DiffusionConfig, NoiseSchedule, build_noise_scheduler
from mmar.diffusion.schedulers import DDIMScheduler, DDPMScheduler


def test_defaults_are_the_papers_choices():
    cfg = DiffusionConfig()
    cfg.validate()
    assert (cfg.num_timesteps, cfg.parameterization) == (1000, "v")
    assert (cfg.head_width, cfg.head_depth, cfg.diffusion_batch_mul) == (256, 3, 4)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "field,value",
    [
        ("parameterization", "foo"),
        ("num_timesteps", 0),
        ("num_timesteps", 1),
        ("head_width", 0),
        ("head_depth", 0),
        ("diffusion_batch_mul", 0),
        ("schedule", "linear"),
        ("num_timesteps", 2.5),
    ],
)
def test_bad_values_raises(field, value):
    with pytest.raises(ConfigError, match=f"DiffusionConfig.{field}"):
        DiffusionConfig.from_dict({field: value})


def test_build_noise_scheduler_by_name():
    schedule = NoiseSchedule(100)
    ddim = build_noise_scheduler("ddim", schedule, eta=0.5)
    ddpm = build_noise_scheduler("ddpm", schedule, "eps")
    assert isinstance(ddim, DDIMScheduler) and ddim.eta == 0.5 and ddim.prediction_type == "v"
    assert isinstance(ddpm, DDPMScheduler) and ddpm.prediction_type == "eps"
    with pytest.raises(ValueError, match="unknown noise scheduler 'euler'"):
        build_noise_scheduler("euler", schedule)
