"""FlowEdit: inversion-free editing for rectified-flow models (Kulikov et al., ICCV 2025).

Instead of noising the source and re-generating it (SDEdit), FlowEdit integrates the
*difference* between the target-prompt and source-prompt velocities along paths that share
their noise with the source, starting from the source itself. The shared noise cancels, so
the source's layout and motion survive while the appearance follows the target prompt.

``velocity(x, sigma) -> v`` are flow predictions (x0 = x - sigma * v) under each prompt.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


@torch.no_grad()
def flowedit(velocity_source: Velocity, velocity_target: Velocity, x_source: torch.Tensor,
             sigmas: torch.Tensor, *, skip_steps: int, refine_steps: int = 0, n_avg: int = 1,
             noise: Callable[[], torch.Tensor],
             callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Edit ``x_source`` (clean, model space) toward the target prompt.

    ``skip_steps`` of the schedule's first (noisiest) steps are skipped: more skipped steps,
    a weaker edit. The last ``refine_steps`` sample the target normally from the edit so far.
    """
    steps = len(sigmas) - 1
    if not 0 <= skip_steps < steps:
        raise ValueError(f"skip_steps must be in [0, {steps - 1}], got {skip_steps}")
    if not 0 <= refine_steps <= steps - skip_steps:
        raise ValueError(f"refine_steps must be in [0, {steps - skip_steps}], got {refine_steps}")
    x_edit = x_source.clone()
    x_refine = None
    for i in range(skip_steps, steps):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        if i < steps - refine_steps:
            delta = torch.zeros_like(x_source)
            for _ in range(n_avg):
                eps = noise()
                z_source = (1 - sigma) * x_source + sigma * eps
                z_target = x_edit + z_source - x_source
                delta += (velocity_target(z_target, sigma) - velocity_source(z_source, sigma)) / n_avg
            x_edit = x_edit + (sigma_next - sigma) * delta
            current = x_edit
        else:
            if x_refine is None:  # hand over to ordinary sampling, noised like the source path
                z_source = (1 - sigma) * x_source + sigma * noise()
                x_refine = x_edit + z_source - x_source
            x_refine = x_refine + (sigma_next - sigma) * velocity_target(x_refine, sigma)
            current = x_refine
        if callback is not None:
            callback(i, current)
    return x_edit if x_refine is None else x_refine
