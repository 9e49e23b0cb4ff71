"""DDIM / DDPM / DPM-Solver++(2M) schedulers: one contract for all, oracle loops, the solver's
order on a Gaussian (closed form), cross-checks with diffusers."""

import pytest
import torch

from mmar.diffusion import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverPP2MScheduler,
    NoiseSchedule,
    build_noise_scheduler,
    eps_from_x0,
    training_target,
)

SCHED = NoiseSchedule(1000)
KINDS = ["v", "eps", "x0"]

# one seeded step (10-step grid, t = 777, v-prediction), computed once and frozen
EXPECTED = {
    "ddim": [
        [1.5634663105, -0.3439560235, -1.8457916975],
        [0.8115741014, -1.0347301960, -1.3797683716],
    ],
    "ddpm": [
        [1.3858385086, -0.2561158538, -1.2462068796],
        [0.9203929305, -0.8783926368, -1.1192611456],
    ],
}


ALL = ["ddim", "ddpm", "dpm++2m"]


def make(name, kind="v", schedule=SCHED):
    if name == "ddim":
        return DDIMScheduler(schedule, kind, eta=0.5)
    return (
        DDPMScheduler(schedule, kind) if name == "ddpm" else DPMSolverPP2MScheduler(schedule, kind)
    )


# ----------------------------------------------------------------- contract, every scheduler
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n", [1, 2, 10, 50, 1000])
def test_timesteps_descending_unique_in_range(name, n):
    s = make(name)
    s.set_timesteps(n)
    ts = s.timesteps
    assert ts.dtype == torch.int64 and ts.shape == (n,)
    assert ts[0].item() == 999 and (n == 1 or ts[-1].item() == 0)
    assert bool((ts[1:] < ts[:-1]).all()) and len(set(ts.tolist())) == n
    assert bool(((ts >= 0) & (ts < 1000)).all())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 50, 999, 1000])
def test_leading_timesteps_closed_form(name, n):
    """leading: t_i = i (T // n), descending; n = 1 starts from noise (T-1) like linspace."""
    s = make(name)
    s.set_timesteps(n, spacing="leading")
    ts = s.timesteps
    expected = [999] if n == 1 else [i * (1000 // n) for i in reversed(range(n))]
    assert ts.dtype == torch.int64 and ts.tolist() == expected
    assert bool((ts[1:] < ts[:-1]).all()) and bool(((ts >= 0) & (ts < 1000)).all())
    if n == 50:
        assert ts[0].item() == 980 and ts[-1].item() == 0


@pytest.mark.parametrize("name", ALL)
def test_all_steps_are_the_same_grid_in_both_spacings(name):
    s = make(name)
    s.set_timesteps(1000, spacing="leading")
    leading = s.timesteps.tolist()
    s.set_timesteps(1000)
    assert leading == s.timesteps.tolist() == list(range(999, -1, -1))


@pytest.mark.parametrize("name", ALL)
def test_spacing_raises(name):
    s = make(name)
    with pytest.raises(ValueError, match=r"set_timesteps: timestep spacing must be one of"):
        s.set_timesteps(10, spacing="trailing")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", KINDS)
def test_leading_oracle_loop_recovers_x0(name, kind):
    """Every scheduler's loop on the leading grid ends on x0 with the exact output (DDPM at
    temperature 0); the grid only changes where the loop starts."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    s = DDIMScheduler(SCHED, kind, eta=0.0) if name == "ddim" else make(name, kind)
    s.set_timesteps(20, spacing="leading")
    assert s.timesteps[0].item() == 950
    for t in s.timesteps.tolist():
        x = s.step(oracle_output(kind, x0, x, t), t, x, generator=g, temperature=0.0)
    torch.testing.assert_close(x, x0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_keeps_shape_dtype_device(name, dtype):
    s = make(name)
    s.set_timesteps(5)
    x = torch.randn(4, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    y = s.step(torch.zeros_like(x), int(s.timesteps[1]), x, generator=torch.Generator())
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    # a bf16 head output is accepted and converted in float32
    y = s.step(torch.zeros(4, 3, dtype=torch.bfloat16), int(s.timesteps[1]), x.float())
    assert y.dtype == torch.float32


@pytest.mark.parametrize("name", ["ddim", "ddpm"])
def test_step_seeded_fixed_numbers_and_deterministic(name):
    s = make(name)
    s.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    t = int(s.timesteps[2])
    assert t == 777
    y1 = s.step(out, t, x, generator=torch.Generator().manual_seed(1))
    y2 = s.step(out, t, x, generator=torch.Generator().manual_seed(1))
    y3 = s.step(out, t, x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(y1, y2) and not torch.allclose(y1, y3)
    torch.testing.assert_close(y1, torch.tensor(EXPECTED[name]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_add_noise_is_q_sample(name):
    s = make(name)
    x0, noise = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    ab = SCHED.alphas_cumprod[500]
    expected = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    torch.testing.assert_close(s.add_noise(x0, noise, 500), expected, atol=1e-15, rtol=0)
    t = torch.tensor([0, 500, 999])
    assert s.add_noise(x0, noise, t)[1].tolist() == s.add_noise(x0, noise, 500)[1].tolist()


@pytest.mark.parametrize("name", ALL)
def test_step_raises(name):
    s = make(name)
    x = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        s.step(x, 999, x)
    s.set_timesteps(10)
    with pytest.raises(ValueError, match="not one of"):
        s.step(x, 500, x)
    with pytest.raises(ValueError, match="model_output shape"):
        s.step(torch.zeros(2, 4), 999, x)
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        s.set_timesteps(1001)
    with pytest.raises(ValueError, match="prediction_type"):
        type(s)(SCHED, "foo")


def test_build_noise_scheduler_names_every_scheduler():
    assert [type(build_noise_scheduler(n, SCHED)).__name__ for n in ALL] == [
        "DDIMScheduler",
        "DDPMScheduler",
        "DPMSolverPP2MScheduler",
    ]
    with pytest.raises(ValueError, match=r"'ddim', 'ddpm', 'dpm\+\+2m'"):
        build_noise_scheduler("euler", SCHED)


# ------------------------------------------------------------------------ oracle sampling loops
def oracle_output(kind, x0, x_t, t):
    """The exact network output for a fixed x0 at the current sample x_t."""
    ab = SCHED.ab(t)
    return training_target(kind, x0, eps_from_x0(x_t, x0, ab), ab)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [10, 50])
def test_ddim_oracle_loop_recovers_x0(kind, n):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    s = DDIMScheduler(SCHED, kind, eta=0.0)
    s.set_timesteps(n)
    eps0 = eps_from_x0(x, x0, SCHED.ab(999))
    for t in s.timesteps.tolist():
        # eta = 0 with an oracle stays on x_t = sqrt(ab_t) x0 + sqrt(1-ab_t) eps0 at every t
        torch.testing.assert_close(x, s.add_noise(x0, eps0, t), atol=1e-8, rtol=0)
        x = s.step(oracle_output(kind, x0, x, t), t, x)
    torch.testing.assert_close(x, x0, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [2, 10, 50])
def test_dpm_solver_oracle_loop_recovers_x0(kind, n):
    """With the exact output for a point mass x0, x0_hat = x0 at every step, so both the first-
    and the second-order update are exact: x_t stays on sqrt(ab_t) x0 + sqrt(1-ab_t) eps0."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    s = DPMSolverPP2MScheduler(SCHED, kind)
    s.set_timesteps(n)
    eps0 = eps_from_x0(x, x0, SCHED.ab(999))
    for t in s.timesteps.tolist():
        torch.testing.assert_close(x, s.add_noise(x0, eps0, t), atol=1e-8, rtol=0)
        x = s.step(oracle_output(kind, x0, x, t), t, x)
    torch.testing.assert_close(x, x0, atol=1e-6, rtol=0)


def gaussian_ode_error(name, n, scale=0.5):
    """Data x0 ~ N(0, scale^2): the exact v is linear in x_t, and the probability-flow ODE maps
    x_T to x_T * scale / sqrt(ab_T scale^2 + 1 - ab_T) (closed form). Returns the deterministic
    sampler's max error against that endpoint after n steps."""
    x = torch.randn(256, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ab_T = SCHED.alphas_cumprod[999]
    exact = x * scale / (ab_T * scale**2 + 1 - ab_T).sqrt()
    s = DDIMScheduler(SCHED, "v", eta=0.0) if name == "ddim" else DPMSolverPP2MScheduler(SCHED)
    s.set_timesteps(n)
    for t in s.timesteps.tolist():
        ab = SCHED.alphas_cumprod[t]
        x0_hat = scale**2 * ab.sqrt() / (ab * scale**2 + 1 - ab) * x  # E[x0 | x_t]
        x = s.step(training_target("v", x0_hat, eps_from_x0(x, x0_hat, ab), ab), t, x)
    return (x - exact).abs().max().item()


def test_dpm_solver_beats_ddim_on_the_closed_form_ode():
    ddim = {n: gaussian_ode_error("ddim", n) for n in (10, 20, 40)}
    dpm = {n: gaussian_ode_error("dpm++2m", n) for n in (10, 20, 40)}
    # measured: DDIM 0.248 / 0.122 / 0.061 (1st order: halves per doubling), DPM-Solver++(2M)
    # 0.096 / 0.0052 / 0.0033 (its one first-order step, into t = 0, dominates from 20 steps)
    assert 1.8 < ddim[10] / ddim[20] < 2.2
    assert dpm[10] / dpm[20] > 4.0
    assert all(dpm[n] < ddim[n] / 2 for n in (10, 20, 40))


def test_dpm_solver_out_of_order_step_is_first_order():
    """The correction needs the previous step's x0_hat: a step that does not follow it (a new
    loop, another index) is a DDIM step."""
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g)
    dpm, ddim = DPMSolverPP2MScheduler(SCHED), DDIMScheduler(SCHED, "v", eta=0.0)
    for s in (dpm, ddim):
        s.set_timesteps(10)
    ts = dpm.timesteps.tolist()
    torch.testing.assert_close(dpm.step(out, ts[0], x), ddim.step(out, ts[0], x))
    torch.testing.assert_close(dpm.step(out, ts[3], x), ddim.step(out, ts[3], x))  # skipped 1-2
    out4 = torch.randn(3, 2, generator=g)
    second = dpm.step(out4, ts[4], x)  # follows step 3 (r = h_3 / h_4 > 0.5): corrected
    assert not torch.allclose(second, ddim.step(out4, ts[4], x))
    dpm.set_timesteps(10)  # reset: first order again
    torch.testing.assert_close(dpm.step(out, ts[1], x), ddim.step(out, ts[1], x))


def test_dpm_solver_injects_no_noise():
    s = DPMSolverPP2MScheduler(SCHED)
    assert not s.injects_noise(1.0)
    s.set_timesteps(10)
    x, out = torch.randn(3, 2), torch.randn(3, 2)
    a = s.step(out, 999, x, generator=torch.Generator().manual_seed(0), temperature=1.0)
    s.set_timesteps(10)
    assert torch.equal(a, s.step(out, 999, x, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("kind", KINDS)
def test_ddpm_oracle_loop_temperature_zero_recovers_x0(kind):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    s = DDPMScheduler(SCHED, kind)
    s.set_timesteps(20)
    for t in s.timesteps.tolist():
        x = s.step(oracle_output(kind, x0, x, t), t, x, generator=g, temperature=0.0)
    torch.testing.assert_close(x, x0, atol=1e-6, rtol=0)


def test_ddim_eta_one_equals_ddpm():
    # eta = 1: sigma^2 = beta_tilde and the DDIM mean equals the DDPM posterior mean
    g = torch.Generator().manual_seed(3)
    x, out = (
        torch.randn(5, 4, generator=g, dtype=torch.float64),
        torch.randn(5, 4, generator=g, dtype=torch.float64),
    )
    ddim, ddpm = DDIMScheduler(SCHED, "v", eta=1.0), DDPMScheduler(SCHED, "v")
    for s in (ddim, ddpm):
        s.set_timesteps(25)
    for t in ddim.timesteps.tolist()[::6]:
        a = ddim.step(out, t, x, generator=torch.Generator().manual_seed(t))
        b = ddpm.step(out, t, x, generator=torch.Generator().manual_seed(t))
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_temperature_scales_only_the_injected_noise():
    s = DDPMScheduler(SCHED, "v")
    s.set_timesteps(10)
    x, out = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    mean = s.step(out, 888, x, temperature=0.0)
    y1 = s.step(out, 888, x, generator=torch.Generator().manual_seed(0), temperature=1.0)
    y05 = s.step(out, 888, x, generator=torch.Generator().manual_seed(0), temperature=0.5)
    torch.testing.assert_close(y05 - mean, 0.5 * (y1 - mean))


# ---------------------------------------------------------------- cross-checks with diffusers
DIFFUSERS_KW = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="v_prediction",
    clip_sample=False,
)


def test_ddpm_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(
        **DIFFUSERS_KW, variance_type="fixed_small", timestep_spacing="linspace"
    )
    ref.set_timesteps(10)
    s = DDPMScheduler(SCHED, "v")
    s.set_timesteps(10)
    assert ref.timesteps.tolist() == s.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    for t in s.timesteps.tolist():
        a = s.step(out, t, x, generator=torch.Generator().manual_seed(t))
        b = ref.step(out, t, x, generator=torch.Generator().manual_seed(t)).prev_sample
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def test_ddim_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    # diffusers' DDIM steps t -> t - T//n; with n = T both step to the previous integer t
    ref = diffusers.DDIMScheduler(**DIFFUSERS_KW, set_alpha_to_one=True)
    ref.set_timesteps(1000)
    s = DDIMScheduler(SCHED, "v", eta=0.7)
    s.set_timesteps(1000)
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    for t in (999, 990, 500, 1, 0):
        a = s.step(out, t, x, generator=torch.Generator().manual_seed(t))
        b = ref.step(out, t, x, eta=0.7, generator=torch.Generator().manual_seed(t)).prev_sample
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [10, 50])
def test_ddim_leading_matches_diffusers_leading(n):
    """diffusers' DDIM with timestep_spacing="leading" keeps the same timesteps, and as its step
    goes t -> t - T//n, which on this grid is the next kept timestep, the whole loop agrees."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(**DIFFUSERS_KW, set_alpha_to_one=True, timestep_spacing="leading")
    ref.set_timesteps(n)
    s = DDIMScheduler(SCHED, "v", eta=0.0)
    s.set_timesteps(n, spacing="leading")
    assert s.timesteps.tolist() == ref.timesteps.tolist()
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    a, b = x.clone(), x.clone()
    for t in s.timesteps.tolist():  # a fixed nonlinear "head": each step's output differs
        a = s.step(torch.sin(3 * a + t / 100), t, a)
        b = ref.step(torch.sin(3 * b + t / 100), t, b).prev_sample
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_dpm_solver_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        solver_order=2,
        algorithm_type="dpmsolver++",
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    s = DPMSolverPP2MScheduler(SCHED, "v")
    s.set_timesteps(10)
    ref.set_timesteps(timesteps=s.timesteps.tolist())
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    a, b = x.clone(), x.clone()
    # up to t = 111: mmar takes the step 111 -> 0 first order (r < 0.5), diffusers second order
    for t in s.timesteps.tolist()[:-2]:  # a fixed nonlinear "head": each step's output differs
        a = s.step(torch.sin(3 * a + t / 100), t, a)
        b = ref.step(torch.sin(3 * b + t / 100), t, b).prev_sample
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
