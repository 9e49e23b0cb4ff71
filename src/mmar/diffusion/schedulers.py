"""DDIM, DDPM and DPM-Solver++(2M) noise schedulers over a respaced cosine schedule,
diffusers-style (docs/method.md §4).

``set_timesteps(n, spacing=...)`` keeps n timesteps of the T-step training process
(``timestep_grid``): "linspace" spreads them evenly from T-1 down to 0 (IDDPM/MAR
``space_timesteps``), "leading" takes every (T // n)-th from 0 up (diffusers'
``timestep_spacing="leading"``: the first step is T - T//n, not T-1); ``step(output, t, x_t)`` goes
from one kept timestep t to the next lower one s (alpha_bar_s = 1 after the last, so the last step
returns x0_hat).

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

TIMESTEP_SPACINGS = ("linspace", "leading")


def timestep_grid(num_inference_steps: int, num_train_timesteps: int, spacing: str) -> torch.Tensor:
    """The kept timesteps, descending long (n,), of n = ``num_inference_steps`` out of T.

        linspace:  t_i = round(i (T-1) / (n-1)),  i = 0..n-1   first step T-1 (alpha_bar ~ 0)
        leading:   t_i = i * (T // n),            i = 0..n-1   first step T - T//n for n | T

    "leading" is diffusers' ``timestep_spacing="leading"`` (steps_offset 0). For T = 1000 and
    n = 50 it starts at t = 980 (cosine alpha_bar 8.8e-4) instead of 999 (2.4e-9): the first
    DDIM step's x_s = sqrt(ab_s) x0_hat + ..., x0_hat = (x_t - sqrt(1-ab_t) eps_hat) /
    sqrt(ab_t), carries an eps-head's error multiplied by ~sqrt(ab_s / ab_t): 632 from 999 to
    979, 2.05 from 980 to 960. Both grids are 0..T-1 when n = T. n = 1 is [T-1] for both: one
    step must start from pure noise (either rule would keep only t = 0).
    """
    T, n = num_train_timesteps, num_inference_steps
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(
            f"timestep spacing must be one of {list(TIMESTEP_SPACINGS)}, got {spacing!r}; "
            "e.g. spacing='leading'"
        )
    if n == 1:
        kept = torch.tensor([T - 1], dtype=torch.float64)
    elif spacing == "linspace":
        kept = torch.linspace(0, T - 1, n, dtype=torch.float64)
    else:
        kept = torch.arange(n, dtype=torch.float64) * (T // n)
    return kept.round().long().flip(0)  # (n,)


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
        self,
        num_inference_steps: int,
        device: torch.device | str | None = None,
        spacing: str = "linspace",
    ) -> None:
        """Keep ``num_inference_steps`` timesteps -> ``.timesteps`` descending long (n,), spaced
        by ``spacing`` ("linspace" or "leading", see :func:`timestep_grid`)."""
        T = self.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
            raise ValueError(
                f"{type(self).__name__}.set_timesteps: num_inference_steps must be "
                f"an int in [1, {T}], got {num_inference_steps!r} (e.g. 50)"
            )
        device = self.schedule.device if device is None else torch.device(device)
        try:
            grid = timestep_grid(num_inference_steps, T, spacing)
        except ValueError as e:
            raise ValueError(f"{type(self).__name__}.set_timesteps: {e}") from None
        self.timesteps = grid.to(device)  # (n,)
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


# DPM-Solver++(2M) takes its second-order step only when h_prev / h >= this (see the class)
MIN_STEP_RATIO = 0.5


class DPMSolverPP2MScheduler(_RespacedScheduler):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): a deterministic
    second-order multistep solver of the probability-flow ODE in its data-prediction form.

    With alpha = sqrt(ab), sigma = sqrt(1-ab), lambda = log(alpha / sigma) and a step from the
    kept timestep t to the next one s (h = lambda_s - lambda_t > 0):

        x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) D
        D   = x0_hat(t)                                         first step (1st order = DDIM)
        D   = (1 + 1/(2r)) x0_hat(t) - 1/(2r) x0_hat(t_prev)    r = h_prev / h, later steps

    The last step (to ab = 1, lambda = inf) returns x0_hat, as DDIM's does. A step over 2x
    longer in lambda than the previous one (r < :data:`MIN_STEP_RATIO`) is first order: there
    the extrapolation weight 1/(2r) exceeds 1 and amplifies the head's error. On the time-uniform
    grid this is the step into t = 0 (lambda jumps from 1.7 to 5.0); taking it second order
    made the closed-form Gaussian test's error at 10 steps 0.45 instead of 0.10 (DDIM: 0.25).
    Any prediction type works (x0_hat comes from :func:`predict_x0_and_eps`); with v-prediction
    the head's error enters x0_hat multiplied by sqrt(1-ab) <= 1 at every t.
    It is deterministic: no noise is injected and the temperature has no effect.

    State: the previous step's x0_hat and h, reset by ``set_timesteps``. The correction uses
    them only when the previous call was the step just before this one on a sample of the same
    shape; otherwise the step is first order.
    """

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "v"):
        super().__init__(schedule, prediction_type)
        self._prev: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (i, x0_hat, h)

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: torch.device | str | None = None,
        spacing: str = "linspace",
    ) -> None:
        super().set_timesteps(num_inference_steps, device, spacing)
        self._prev = None

    def injects_noise(self, temperature: float) -> bool:
        return False

    def step(
        self,
        model_output: torch.Tensor,
        t: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t (M, D) -> x_s (M, D), s the next kept timestep below t. ``generator``,
        ``temperature`` and ``noise`` are accepted for the shared interface and unused."""
        i = self._step_index(t, model_output, sample)
        ab_t, ab_s = self._ab_t[i], self._ab_prev[i]  # 0-d f64
        x0_hat, _ = predict_x0_and_eps(self.prediction_type, model_output, sample, ab_t)
        dt = x0_hat.dtype
        if i == len(self._index) - 1:  # to the clean sample: x_0 = x0_hat
            self._prev = None
            return x0_hat.to(sample.dtype)
        lam_t = 0.5 * (ab_t / (1 - ab_t)).log()
        lam_s = 0.5 * (ab_s / (1 - ab_s)).log()
        h = lam_s - lam_t  # 0-d f64, > 0
        d = x0_hat
        prev = self._prev
        if prev is not None and prev[0] == i - 1 and prev[1].shape == x0_hat.shape:
            r = prev[2] / h
            if r >= MIN_STEP_RATIO:
                d = ((1 + 0.5 / r).to(dt)) * x0_hat - (0.5 / r).to(dt) * prev[1]
        self._prev = (i, x0_hat, h)
        ratio = ((1 - ab_s) / (1 - ab_t)).sqrt()  # sigma_s / sigma_t
        coef = ab_s.sqrt() * -torch.expm1(-h)  # alpha_s (1 - e^{-h}), expm1: small h exact
        return (ratio.to(dt) * sample.to(dt) + coef.to(dt) * d).to(sample.dtype)


NoiseScheduler = DDIMScheduler | DDPMScheduler | DPMSolverPP2MScheduler
SCHEDULERS = ("ddim", "ddpm", "dpm++2m")


def build_noise_scheduler(
    name: str, schedule: NoiseSchedule, prediction_type: str = "v", eta: float = 0.0
) -> NoiseScheduler:
    """The noise scheduler called ``name`` ("ddim" with ``eta``, "ddpm" or "dpm++2m") for a head
    that predicts ``prediction_type`` (the model's ``diffusion.parameterization``)."""
    if name == "ddim":
        return DDIMScheduler(schedule, prediction_type, eta=eta)
    if name == "ddpm":
        return DDPMScheduler(schedule, prediction_type)
    if name == "dpm++2m":
        return DPMSolverPP2MScheduler(schedule, prediction_type)
    raise ValueError(f"unknown noise scheduler {name!r}; expected one of {list(SCHEDULERS)}")
