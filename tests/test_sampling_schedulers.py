"""Our schedule and solver steps against diffusers' schedulers, step by step, on a toy model.

The schedulers are configured as diffusers' Wan pipelines configure them (UniPC with
``use_flow_sigmas``, ``prediction_type="flow_prediction"``, ``flow_shift``; flow-match Euler with
``shift``). The toy model is a fixed smooth nonlinear velocity field of (x, timestep); both sides
see the same sequence of model inputs when the schedules and updates agree, so the whole
trajectory is compared, not only the end point. Tolerance: 1e-10 x the trajectory's scale in
float64 (the arithmetic is the same up to the order of operations).
"""
from __future__ import annotations

import math

import pytest
import torch

from comfyui_videodit.samplers.schedules import flow_sigmas, shift_sigmas
from comfyui_videodit.samplers.solvers import sample_euler, sample_unipc

diffusers = pytest.importorskip("diffusers")

TOL = 1e-6


def toy_velocity(x: torch.Tensor, timestep: float) -> torch.Tensor:
    """A flow prediction that depends on both x and the timestep, nonlinearly."""
    s = timestep / 1000.0
    return torch.tanh(1.3 * x) * (0.6 + s) + 0.3 * torch.sin(2.0 * x + 5.0 * s) - 0.2 * x


def start_noise() -> torch.Tensor:
    return torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def run_ours(solver, sigmas: torch.Tensor, integer_timesteps: bool):
    inputs = []

    def denoiser(x, sigma):
        t = sigma * 1000.0
        t = math.floor(t) if integer_timesteps else t
        return x - sigma * toy_velocity(x, t)

    final = solver(denoiser, start_noise(), sigmas.double(),
                   lambda i, x, x0: inputs.append(x.clone()))
    return inputs, final


def run_diffusers(scheduler):
    inputs = []
    x = start_noise()
    for t in scheduler.timesteps:
        inputs.append(x.clone())
        x = scheduler.step(toy_velocity(x, float(t)), t, x, return_dict=False)[0]
    return inputs, x


def trajectory_error(ours, theirs) -> float:
    (our_inputs, our_final), (their_inputs, their_final) = ours, theirs
    assert len(our_inputs) == len(their_inputs)
    scale = float(their_final.abs().max())
    return max(float((a - b).abs().max()) for a, b in
               zip(our_inputs + [our_final], their_inputs + [their_final])) / scale


@pytest.mark.parametrize("steps,shift", [(4, 1.0), (10, 3.0), (25, 5.0), (50, 8.0)])
def test_schedule_equals_diffusers_flow_unipc_schedule(steps, shift):
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    scheduler.set_timesteps(steps)
    ours = flow_sigmas(steps, shift)
    assert torch.allclose(ours, scheduler.sigmas.float(), atol=2e-6)
    # the network gets int(sigma * 1000), as diffusers' UniPC hands it
    assert [math.floor(float(s) * 1000) for s in ours[:-1]] == scheduler.timesteps.tolist()


@pytest.mark.parametrize("steps,shift", [(3, 3.0), (8, 5.0), (20, 3.0), (40, 12.0)])
def test_unipc_steps_equal_diffusers_unipc(steps, shift):
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    scheduler.set_timesteps(steps)
    err = trajectory_error(run_ours(sample_unipc, flow_sigmas(steps, shift), True),
                           run_diffusers(scheduler))
    assert err <= TOL, f"max trajectory error {err:.2e}"


@pytest.mark.parametrize("steps,shift", [(3, 3.0), (8, 5.0), (30, 3.0)])
def test_euler_steps_equal_diffusers_flow_match_euler(steps, shift):
    # diffusers' flow-match Euler spaces its default timesteps differently from Wan's schedule
    # (it shifts an already shifted minimum, so its last step ends near sigma 0.009); hand it
    # our unshifted schedule and let it apply the shift itself, so the steps can be compared.
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    ours = flow_sigmas(steps, shift)
    unshifted = ours[:-1].double() / (shift - (shift - 1) * ours[:-1].double())
    assert torch.allclose(shift_sigmas(unshifted, shift), ours[:-1].double(), atol=1e-6)
    scheduler.set_timesteps(sigmas=unshifted.tolist())
    assert torch.allclose(scheduler.sigmas.float(), ours, atol=2e-6)
    err = trajectory_error(run_ours(sample_euler, scheduler.sigmas.double(), False),
                           run_diffusers(scheduler))
    assert err <= TOL, f"max trajectory error {err:.2e}"
