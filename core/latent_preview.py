"""A sampler's current guess (x0) as a small RGB picture, cheaply.

Each latent channel contributes a fixed colour (``LatentFormat.rgb_factors``), which is
ComfyUI's "latent2rgb" preview; a VAE decode per step would cost more than the step. The maps
apply to *model-space* latents (normalised, as the DiT sees them). Whether anyone wants a
preview is the host's question (``runtime/previews.py``); this module only draws.
"""
from __future__ import annotations

from typing import Any

import torch

from .latent_formats import FORMATS, LatentFormat, format_for_channels


def preview_format(latent_format: Any, channels: int) -> LatentFormat:
    """The format to colour a latent with: by name or object, or (None) by its channel count."""
    if latent_format is None:
        fmt = format_for_channels(channels)
        if fmt is None:
            raise ValueError(f"no preview colours for a {channels}-channel latent; "
                             f"known formats: {sorted(FORMATS)}")
    else:
        fmt = latent_format if isinstance(latent_format, LatentFormat) else FORMATS.get(latent_format)
        if fmt is None:
            raise ValueError(f"no preview colours for latent format {latent_format!r}; "
                             f"known: {sorted(FORMATS)}")
    if not fmt.rgb_factors:
        raise ValueError(f"latent format {fmt.name} has no preview colours")
    if channels != fmt.channels:
        raise ValueError(f"latent format {fmt.name} has {fmt.channels} channels, "
                         f"the latent has {channels}")
    return fmt


def latent_to_rgb(x0: torch.Tensor, latent_format: Any = None, *, frames: int = 1) -> torch.Tensor:
    """``[B, C, T, h, w]`` model-space latent -> ``[n, h, w, 3]`` float 0..1 for batch item 0.

    ``frames`` latent frames are taken evenly from first to last (1: the first frame only).
    """
    if x0.ndim != 5:
        raise ValueError(f"expected a 5-D video latent [B, C, T, h, w], got shape {tuple(x0.shape)}")
    fmt = preview_format(latent_format, x0.shape[1])
    video = x0[0].detach().float()  # [C, T, h, w]
    count = max(1, min(int(frames), video.shape[1]))
    picked = torch.linspace(0, video.shape[1] - 1, count).round().long().unique()
    weights = torch.tensor(fmt.rgb_factors, dtype=video.dtype, device=video.device)  # [C, 3]
    offset = torch.tensor(fmt.rgb_bias, dtype=video.dtype, device=video.device)
    rgb = torch.einsum("cthw,cr->thwr", video[:, picked.to(video.device)], weights) + offset
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).cpu()


def rgb_strip_image(frames_rgb: torch.Tensor):
    """``[n, h, w, 3]`` 0..1 -> one PIL image with the frames left to right."""
    from PIL import Image

    strip = torch.cat(list(frames_rgb), dim=1)  # [h, n*w, 3]
    pixels = strip.mul(255).to(torch.uint8).numpy()  # truncates, as ComfyUI's previews do
    return Image.fromarray(pixels)


def preview_image(x0: torch.Tensor, latent_format: Any = None, *, frames: int = 1):
    """A PIL image of ``x0`` (the chosen latent frames side by side)."""
    return rgb_strip_image(latent_to_rgb(x0, latent_format, frames=frames))
