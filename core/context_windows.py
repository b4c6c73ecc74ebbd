"""Context windows: one velocity for a latent longer than the model's window.

A video DiT attends over every token of its input at once and was trained on clips of one
length (Wan: 81 frames). For a longer latent, each step computes the velocity of overlapping
windows along latent time and fuses them: every latent frame gets the weighted mean of the
windows that cover it, with weights that ramp down linearly across each overlap, so a window's
edge frames (which see only one side of their context) count least and neighbouring windows
cross-fade. The first window's start and the last window's end sit on the clip's own ends and
keep full weight.

Windows start every ``window - overlap`` latent frames; the last one is moved back to end on
the last frame, so any length is covered (its overlap with the one before grows instead).

Every input given per latent frame is cut to the window along with the latent: extra input
channels (Wan 2.1 I2V mask + image latent), a VACE context, and clean first frames (Wan 2.2
TI2V-type models), which exist only at the clip's start and so only in the windows that
reach back there.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError
from .conditioning import ModelInputs

Velocity = Callable[[torch.Tensor, float, ModelInputs], torch.Tensor]


def latent_frames(pixel_frames: int, temporal_factor: int) -> int:
    """Latent frames of a clip of ``pixel_frames`` (4k+1) frames: the first, then one per 4."""
    return (pixel_frames - 1) // temporal_factor + 1


def pixel_start(latent_start: int, temporal_factor: int) -> int:
    """The first video frame that latent frame ``latent_start`` decodes to."""
    return 0 if latent_start == 0 else (latent_start - 1) * temporal_factor + 1


@dataclass(frozen=True)
class WindowLayout:
    """Window length and overlap in latent frames."""
    window: int
    overlap: int

    def __post_init__(self):
        if self.window < 1 or not 0 <= self.overlap < self.window:
            raise ValueError(f"need 0 <= overlap < window, got window {self.window}, "
                             f"overlap {self.overlap}")

    def spans(self, frames: int) -> list[tuple[int, int]]:
        """``[(start, stop)]`` of the windows covering ``frames`` latent frames, in order."""
        if frames <= self.window:
            return [(0, frames)]
        stride = self.window - self.overlap
        starts = list(range(0, frames - self.window, stride)) + [frames - self.window]
        return [(s, s + self.window) for s in starts]

    def weights(self, frames: int) -> torch.Tensor:
        """``[windows, frames]``: each window's share of each frame's velocity (zero outside
        the window); every column sums to 1."""
        spans = self.spans(frames)
        ramps = torch.zeros(len(spans), frames, dtype=torch.float64)
        for index, (start, stop) in enumerate(spans):
            ramp = torch.ones(stop - start, dtype=torch.float64)
            if index > 0:                       # fade in across the overlap with the previous
                shared = spans[index - 1][1] - start
                ramp[:shared] = torch.minimum(ramp[:shared], _rising(shared))
            if index < len(spans) - 1:          # fade out across the overlap with the next
                shared = stop - spans[index + 1][0]
                ramp[-shared:] = torch.minimum(ramp[-shared:], _rising(shared).flip(0))
            ramps[index, start:stop] = ramp
        return (ramps / ramps.sum(dim=0, keepdim=True)).float()


def _rising(frames: int) -> torch.Tensor:
    """1/(n+1) ... n/(n+1): with its mirror image it sums to 1 at every shared frame."""
    return torch.arange(1, frames + 1, dtype=torch.float64) / (frames + 1)


def windowed_velocity(velocity: Velocity, layout: WindowLayout) -> Velocity:
    """``velocity`` computed window by window over latent time and fused (see the module)."""

    def fused(x: torch.Tensor, sigma: float, inputs: ModelInputs) -> torch.Tensor:
        frames = x.shape[2]
        spans = layout.spans(frames)
        weights = layout.weights(frames)
        out = None
        for index, (start, stop) in enumerate(spans):
            v = velocity(x[:, :, start:stop], sigma,
                         window_inputs(inputs, start, stop, frames, index))
            share = weights[index, start:stop].to(v.device).view(1, 1, -1, 1, 1)
            if out is None:
                out = torch.zeros(x.shape, dtype=v.dtype, device=v.device)
            out[:, :, start:stop] += v * share
        return out

    return fused


# Per-frame inputs a window cannot be cut from when their length differs from the latent's.
_FIELD_FIXES = {
    "concat_latent": ("the image conditioning was made for another length",
                      "make it with VideoDiT Image To Video at the clip's full length"),
    "vace_context": ("VACE reference images come before the clip's frames and belong to no "
                     "single window", "remove the reference images from VideoDiT VACE "
                     "Conditioning, or sample without context windows"),
}


def window_inputs(inputs: ModelInputs, start: int, stop: int, frames: int,
                  index: int) -> ModelInputs:
    """``inputs`` for latent frames ``start:stop`` of ``frames``: every per-frame field cut to
    the window, clean first frames kept where the window reaches them."""
    changes = {}
    for item in dataclasses.fields(inputs):
        value = getattr(inputs, item.name)
        if not (isinstance(value, torch.Tensor) and value.ndim == 5):
            continue   # text and CLIP tokens: the same for every window
        if value.shape[2] != frames:
            what, fix = _FIELD_FIXES.get(item.name, ("it has another length", "match its length "
                                                     "to the latent's"))
            raise InputError(f"context windows cannot cut {item.name} ({value.shape[2]} latent "
                             f"frames) to windows of a {frames}-frame latent: {what}",
                             input="conditioning", fix=fix)
        changes[item.name] = value[:, :, start:stop]
    changes["first_frames"] = min(max(inputs.first_frames - start, 0), stop - start)
    # Each window is its own stream of calls: a step cache keyed by the guidance pass must not
    # hand one window's velocity to another of the same shape.
    changes["branch"] = f"{inputs.branch} window {index}"
    return dataclasses.replace(inputs, **changes)
