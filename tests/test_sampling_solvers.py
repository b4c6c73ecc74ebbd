"""Solvers on an analytic flow, schedules, seeds and Cancel."""
from __future__ import annotations

import math

import pytest
import torch

from comfyui_videodit.errors import Interrupted
from comfyui_videodit.runtime import progress
from comfyui_videodit.samplers.denoise import seeded_noise
from comfyui_videodit.samplers.schedules import flow_sigmas, shift_sigmas
from comfyui_videodit.samplers.solvers import (sample_dpmpp_2m, sample_euler,
                                               sample_flow_distilled, sample_unipc)

# Data ~ N(mu, s^2) per element. For the flow x_sigma = (1 - sigma) x0 + sigma * noise the
# exact clean-sample predictor is known in closed form, and so is the ODE solution: the
# point keeps its "standardised" coordinate z = (x - (1 - sigma) mu) / sqrt((1-sigma)^2 s^2 + sigma^2).
MU, S = 0.7, 0.5


def exact_x0(x: torch.Tensor, sigma: float) -> torch.Tensor:
    a = 1 - sigma
    var = a * a * S * S + sigma * sigma
    return MU + a * S * S * (x - a * MU) / var


def exact_solution(x_start: torch.Tensor, sigma_start: float, sigma_end: float) -> torch.Tensor:
    def spread(sigma):
        return math.sqrt((1 - sigma) ** 2 * S * S + sigma ** 2)
    z = (x_start - (1 - sigma_start) * MU) / spread(sigma_start)
    return (1 - sigma_end) * MU + spread(sigma_end) * z


def convergence_error(solver, steps: int) -> float:
    # Stop short of sigma 0: the last step to 0 is first order by design in multistep solvers
    # and would hide the order of the steps before it.
    sigmas = torch.linspace(0.95, 0.05, steps + 1, dtype=torch.float64)
    x = torch.linspace(-2, 2, 11, dtype=torch.float64)
    out = solver(exact_x0, x.clone(), sigmas)
    return float((out - exact_solution(x, 0.95, 0.05)).abs().max())


@pytest.mark.parametrize("solver,order", [(sample_euler, 1), (sample_dpmpp_2m, 2),
                                          (sample_unipc, 2)])
def test_solvers_converge_at_their_order(solver, order):
    errors = [convergence_error(solver, n) for n in (32, 64, 128, 256)]
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]
    assert errors[-1] < errors[0] / 4
    # The observed order approaches the theoretical one as steps grow. UniPC's corrector makes
    # it far more accurate, but its last step is first order (as in Wan and diffusers), which
    # caps its global order at 2.
    assert rates[-1] == pytest.approx(order, abs=0.35), (errors, rates)


def test_unipc_is_more_accurate_than_dpmpp_2m_at_equal_steps():
    for steps in (16, 32, 64):
        assert convergence_error(sample_unipc, steps) < convergence_error(sample_dpmpp_2m, steps)


def test_distilled_sampler_lands_on_the_prediction():
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64)
    noise = lambda: torch.zeros(5, dtype=torch.float64)  # noqa: E731
    target = torch.full((5,), 0.3, dtype=torch.float64)
    out = sample_flow_distilled(lambda x, s: target, torch.ones(5, dtype=torch.float64),
                                sigmas, noise=noise)
    assert torch.equal(out, target)


def test_schedule_follows_wan_shift_and_denoise():
    sigmas = flow_sigmas(10, 5.0)
    assert len(sigmas) == 11 and sigmas[-1] == 0 and sigmas[0] == pytest.approx(1.0, abs=1e-5)
    assert torch.all(sigmas[:-1] > sigmas[1:])
    assert float(shift_sigmas(torch.tensor(0.5), 3.0)) == pytest.approx(0.75)
    partial = flow_sigmas(10, 5.0, denoise=0.5)
    # ComfyUI semantics: a 20-step schedule, the last 10 steps run
    assert torch.allclose(partial, flow_sigmas(20, 5.0)[-11:])
    assert float(partial[0]) == pytest.approx(0.833, abs=0.01)  # REFERENCE §8 table: d .5, shift 5
    with pytest.raises(ValueError):
        flow_sigmas(0, 5.0)


def test_seeded_noise_is_device_independent_and_reproducible():
    a, b = seeded_noise((2, 3), 5), seeded_noise((2, 3), 5)
    assert torch.equal(a, b) and not torch.equal(a, seeded_noise((2, 3), 6))
    assert seeded_noise((1,), 2 ** 64 - 1).shape == (1,)  # ComfyUI's seed range


def test_cancel_stops_within_a_step_and_a_rerun_is_identical():
    sigmas = flow_sigmas(8, 3.0).double()
    x = torch.randn(4, dtype=torch.float64)
    calls = []

    def model(xx, sigma):
        calls.append(sigma)
        return exact_x0(xx, sigma)

    def cancel_at_three(step, x_now, x0):
        if step == 2:
            progress.request_interrupt()
        progress.check_interrupt()

    with pytest.raises(Interrupted):
        sample_unipc(model, x.clone(), sigmas, cancel_at_three)
    assert len(calls) == 3
    clean = sample_unipc(exact_x0, x.clone(), sigmas)
    again = sample_unipc(exact_x0, x.clone(), sigmas)
    assert torch.equal(clean, again)
