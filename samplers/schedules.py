"""Flow-matching noise schedules: sigma goes from ~1 (pure noise) to 0 (clean)."""
from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's time shift: sigma' = shift*s / (1 + (shift-1)*s). Larger shift = more time at high noise."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def flow_sigmas(steps: int, shift: float, *, denoise: float = 1.0) -> torch.Tensor:
    """``steps + 1`` sigmas ending in 0, as Wan's and diffusers' flow UniPC build them.

    Unshifted sigmas are evenly spaced from 1 down to 1/1000 over the full schedule, then shifted.
    ``denoise < 1`` works as in ComfyUI: a schedule of ``int(steps / denoise)`` steps is built and
    only its last ``steps`` are run, so the start noise level is ``sigmas[0]`` of that tail.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    total = steps if denoise >= 1.0 else max(int(steps / denoise), steps)
    base = torch.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, total + 1, dtype=torch.float64)[:-1]
    sigmas = shift_sigmas(base, shift)
    # sigma exactly 1 would put log(0) into multistep solvers' first step
    sigmas[0] = torch.clamp(sigmas[0], max=1.0 - 1e-6)
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)]).float()
    return sigmas[-(steps + 1):]
