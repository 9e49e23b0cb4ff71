"""DDIM and DDPM noise schedulers over a respaced cosine schedule, diffusers-style
(docs/method.md §4).

``set_timesteps(n)`` keeps n timesteps of the T-step training process, evenly spaced from T-1
down to 0 (IDDPM/MAR ``space_timesteps``); ``step(output, t, x_t)`` goes from one kept timestep t
to the next lower one s (alpha_bar_s = 1 after the last, so the last step returns x0_hat).

Written by hand rather than taken from ``diffusers`` (an optional dependency here, used in the
tests as a reference): its tables are float32 (alpha_bar_999 ~ 2e-9 loses digits), its ``step``
has no sampling temperature, and its DDIM moves by a fixed stride T//n instead of to the next
kept timestep. The per-step coefficients are gathered from float64 tensors on the sample's
device; there is no numpy indexing per step (docs/performance.md).
``step`` takes the noise it injects as an argument when the caller draws it (per-sample
generators make seeded sampling batch-invariant), else draws it from ``generator``.
"""

from __future__ import annotations

import torch

from mmar.diffusion.parameterization import PARAMETERIZATIONS, predict_x0_and_eps, q_sample
from mmar.diffusion.schedule import NoiseSchedule


class _RespacedScheduler:
    """Shared part: prediction type, respaced timesteps and their alpha_bar tables."""

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "v"):
        if prediction_type not in PARAMETERIZATIONS:
            raise ValueError(
                f"{type(self).__name__}: prediction_type must be one of "
                f"{list(PARAMETERIZATIONS)}, got {prediction_type!r}"
            )
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.num_train_timesteps = schedule.num_timesteps
        self.timesteps: torch.Tensor | None = None
        self._index: dict[int, int] = {}

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None
    ) -> None:
        """Keep ``num_inference_steps`` timesteps -> ``.timesteps`` descending long (n,)."""
        T = self.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
            raise ValueError(
                f"{type(self).__name__}.set_timesteps: num_inference_steps must be "
                f"an int in [1, {T}], got {num_inference_steps!r} (e.g. 50)"
            )
        device = self.schedule.device if device is None else torch.device(device)
        if num_inference_steps == 1:
            # one step must start from pure noise (IDDPM's spacing would keep only t = 0)
            kept = torch.tensor([T - 1], dtype=torch.float64)
        else:
            kept = torch.linspace(0, T - 1, num_inference_steps, dtype=torch.float64)
        self.timesteps = kept.round().long().flip(0).to(device)  # (n,)
        ab = self.schedule.alphas_cumprod.to(device)
        self._ab_t = ab[self.timesteps]  # (n,)
        # alpha_bar of the step's target s; 1 after the last step (the clean sample)
        self._ab_prev = torch.cat(
            [self._ab_t[1:], torch.ones(1, dtype=ab.dtype, device=device)]
        )  # (n,)
        self._index = {t: i for i, t in enumerate(self.timesteps.tolist())}

    def _step_index(
        self, t: int | torch.Tensor, model_output: torch.Tensor, sample: torch.Tensor
    ) -> int:
        if self.timesteps is None:
            raise RuntimeError(f"{type(self).__name__}.step: call set_timesteps(n) first")
        i = self._index.get(int(t))
        if i is None:
            raise ValueError(
                f"{type(self).__name__}.step: t={int(t)} is not one of the "
                f"{len(self._index)} timesteps set; pass an entry of .timesteps"
            )
        if model_output.shape != sample.shape:
            raise ValueError(
                f"{type(self).__name__}.step: model_output shape "
                f"{tuple(model_output.shape)} != sample shape {tuple(sample.shape)}"
            )
        return i

    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, t: int | torch.Tensor
    ) -> torch.Tensor:
        """x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) noise; t an int or (M,) long -> (M, D)."""
        return q_sample(x0, noise, self.schedule.ab(t)).to(x0.dtype)

    def injects_noise(self, temperature: float) -> bool:
        """Whether ``step`` adds noise (then it uses ``noise`` or draws from its generator)."""
        raise NotImplementedError

    def _noise(
        self, sample: torch.Tensor, generator: torch.Generator | None, noise: torch.Tensor | None
    ) -> torch.Tensor:
        if noise is not None:
            if noise.shape != sample.shape:
                raise ValueError(
                    f"{type(self).__name__}.step: noise shape {tuple(noise.shape)} "
                    f"!= sample shape {tuple(sample.shape)}"
                )
            return noise.to(sample.dtype)
        return torch.randn(
            sample.shape, generator=generator, device=sample.device, dtype=sample.dtype
        )

    def __repr__(self) -> str:
        n = None if self.timesteps is None else len(self.timesteps)
        return (
            f"{type(self).__name__}(T={self.num_train_timesteps}, "
            f"prediction_type={self.prediction_type!r}, num_inference_steps={n})"
        )


class DDIMScheduler(_RespacedScheduler):
    """DDIM (Song et al. 2021); eta = 0 is deterministic, eta = 1 matches DDPM's variance."""

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "v", eta: float = 0.0):
        super().__init__(schedule, prediction_type)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"DDIMScheduler: eta must be in [0, 1], got {eta}")
        self.eta = float(eta)

    def injects_noise(self, temperature: float) -> bool:
        return self.eta > 0 and temperature > 0

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t (M, D) -> x_s (M, D), s the next kept timestep below t (a python int).

        noise: (M, D) standard normal to inject (eta > 0); None draws it from ``generator``."""
        i = self._step_index(t, model_output, sample)
        ab_t, ab_s = self._ab_t[i], self._ab_prev[i]  # 0-d f64
        # 1. x0_hat and eps_hat from the head's output (docs/method.md §4 "From v" / "From eps")
        x0_hat, eps_hat = predict_x0_and_eps(self.prediction_type, model_output, sample, ab_t)
        dt = x0_hat.dtype
        # 2. sigma = eta sqrt((1-ab_s)/(1-ab_t)) sqrt(1-ab_t/ab_s)  (method.md §4 DDIM); 0 at end
        sigma = self.eta * ((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)).sqrt()
        # 3. x_s = sqrt(ab_s) x0_hat + sqrt(1-ab_s-sigma^2) eps_hat          (method.md §4 DDIM)
        direction = (1 - ab_s - sigma**2).clamp(min=0).sqrt().to(dt) * eps_hat
        prev = ab_s.sqrt().to(dt) * x0_hat + direction
        # 4. + sigma * tau * z: temperature scales only the injected noise (as in MAR)
        last = i == len(self._index) - 1
        if self.injects_noise(temperature) and not last:
            prev = prev + (sigma * temperature).to(dt) * self._noise(sample, generator, noise)
        return prev.to(sample.dtype)


class DDPMScheduler(_RespacedScheduler):
    """Ancestral DDPM sampling (MAR's) with the posterior variance beta_tilde of the respaced
    process: beta_t = 1 - ab_t/ab_s between consecutive kept timesteps t > s."""

    def injects_noise(self, temperature: float) -> bool:
        return temperature > 0

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t (M, D) -> x_s ~ q(x_s | x_t, x0_hat) with noise scaled by tau (M, D).

        noise: (M, D) standard normal to inject; None draws it from ``generator``."""
        i = self._step_index(t, model_output, sample)
        ab_t, ab_s = self._ab_t[i], self._ab_prev[i]  # 0-d f64
        # 1. x0_hat from the head's output (docs/method.md §4 "From v" / "From eps")
        x0_hat, _ = predict_x0_and_eps(self.prediction_type, model_output, sample, ab_t)
        dt = x0_hat.dtype
        # 2. the respaced step's beta_t = 1 - alpha_t, alpha_t = ab_t / ab_s
        alpha_t = ab_t / ab_s
        beta_t = 1 - alpha_t
        # 3. posterior mean (DDPM eq. 7)
        #    mu = sqrt(ab_s) beta_t/(1-ab_t) x0_hat + sqrt(alpha_t)(1-ab_s)/(1-ab_t) x_t
        c_x0 = (ab_s.sqrt() * beta_t / (1 - ab_t)).to(dt)
        c_xt = (alpha_t.sqrt() * (1 - ab_s) / (1 - ab_t)).to(dt)
        prev = c_x0 * x0_hat + c_xt * sample.to(dt)
        # 4. + tau sqrt(beta_tilde) z, beta_tilde = (1-ab_s)/(1-ab_t) beta_t; the last step
        #    (ab_s = 1, beta_tilde = 0, mu = x0_hat) adds no noise, as in DDPM
        last = i == len(self._index) - 1
        if self.injects_noise(temperature) and not last:
            std = ((1 - ab_s) / (1 - ab_t) * beta_t).sqrt()
            prev = prev + (std * temperature).to(dt) * self._noise(sample, generator, noise)
        return prev.to(sample.dtype)


NoiseScheduler = DDIMScheduler | DDPMScheduler
SCHEDULERS = ("ddim", "ddpm")


def build_noise_scheduler(
    name: str, schedule: NoiseSchedule, prediction_type: str = "v", eta: float = 0.0
) -> NoiseScheduler:
    """The noise scheduler called ``name`` ("ddim" with ``eta``, or "ddpm") for a head that
    predicts ``prediction_type`` (the model's ``diffusion.parameterization``)."""
    if name == "ddim":
        return DDIMScheduler(schedule, prediction_type, eta=eta)
    if name == "ddpm":
        return DDPMScheduler(schedule, prediction_type)
    raise ValueError(f"unknown noise scheduler {name!r}; expected one of {list(SCHEDULERS)}")
