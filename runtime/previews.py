"""Live previews: a sampler's current guess (x0) as a small RGB picture, cheaply.

Each latent channel contributes a fixed RGB colour (a linear map fitted to the VAE), which is
ComfyUI's "latent2rgb" preview for Wan; a VAE decode per step would cost more than the step.
The maps apply to *model-space* latents (normalised, as the DiT sees them). Wan has no TAESD
decoder in ComfyUI either, so every preview method other than ``none`` gets this one.

When previews are made:
- inside ComfyUI, when the server runs with ``--preview-method`` other than ``none`` (the
  default is ``none``); the value is read on every call, so a per-prompt override applies;
- standalone, only after :func:`set_preview_sink` registered a receiver (the CLI or a script).
Nothing here imports PIL until a picture is actually made.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .host import comfy_module

DEFAULT_PREVIEW_SIZE = 512

# Per latent channel: its (R, G, B) contribution; values from ComfyUI's comfy/latent_formats.py
# (classes Wan21 and Wan22). Output is about -1..1 and mapped to 0..1 like ComfyUI does.
_WAN21_RGB = (
    (-0.1299, -0.1692,  0.2932),
    ( 0.0671,  0.0406,  0.0442),
    ( 0.3568,  0.2548,  0.1747),
    ( 0.0372,  0.2344,  0.1420),
    ( 0.0313,  0.0189, -0.0328),
    ( 0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925),
    ( 0.0166,  0.1902,  0.1975),
    (-0.0412,  0.0267, -0.1364),
    (-0.1293,  0.0740,  0.1636),
    ( 0.0680,  0.3019,  0.1128),
    ( 0.0032,  0.0581,  0.0639),
    (-0.1251,  0.0927,  0.1699),
    ( 0.0060, -0.0633,  0.0005),
    ( 0.3477,  0.2275,  0.2950),
    ( 0.1984,  0.0913,  0.1861),
)
_WAN22_RGB = (
    ( 0.0119,  0.0103,  0.0046),
    (-0.1062, -0.0504,  0.0165),
    ( 0.0140,  0.0409,  0.0491),
    (-0.0813, -0.0677,  0.0607),
    ( 0.0656,  0.0851,  0.0808),
    ( 0.0264,  0.0463,  0.0912),
    ( 0.0295,  0.0326,  0.0590),
    (-0.0244, -0.0270,  0.0025),
    ( 0.0443, -0.0102,  0.0288),
    (-0.0465, -0.0090, -0.0205),
    ( 0.0359,  0.0236,  0.0082),
    (-0.0776,  0.0854,  0.1048),
    ( 0.0564,  0.0264,  0.0561),
    ( 0.0006,  0.0594,  0.0418),
    (-0.0319, -0.0542, -0.0637),
    (-0.0268,  0.0024,  0.0260),
    ( 0.0539,  0.0265,  0.0358),
    (-0.0359, -0.0312, -0.0287),
    (-0.0285, -0.1032, -0.1237),
    ( 0.1041,  0.0537,  0.0622),
    (-0.0086, -0.0374, -0.0051),
    ( 0.0390,  0.0670,  0.2863),
    ( 0.0069,  0.0144,  0.0082),
    ( 0.0006, -0.0167,  0.0079),
    ( 0.0313, -0.0574, -0.0232),
    (-0.1454, -0.0902, -0.0481),
    ( 0.0714,  0.0827,  0.0447),
    (-0.0304, -0.0574, -0.0196),
    ( 0.0401,  0.0384,  0.0204),
    (-0.0758, -0.0297, -0.0014),
    ( 0.0568,  0.1307,  0.1372),
    (-0.0055, -0.0310, -0.0380),
    ( 0.0239, -0.0305,  0.0325),
    (-0.0663, -0.0673, -0.0140),
    (-0.0416, -0.0047, -0.0023),
    ( 0.0166,  0.0112, -0.0093),
    (-0.0211,  0.0011,  0.0331),
    ( 0.1833,  0.1466,  0.2250),
    (-0.0368,  0.0370,  0.0295),
    (-0.3441, -0.3543, -0.2008),
    (-0.0479, -0.0489, -0.0420),
    (-0.0660, -0.0153,  0.0800),
    (-0.0101,  0.0068,  0.0156),
    (-0.0690, -0.0452, -0.0927),
    (-0.0145,  0.0041,  0.0015),
    ( 0.0421,  0.0451,  0.0373),
    ( 0.0504, -0.0483, -0.0356),
    (-0.0837,  0.0168,  0.0055),
)

RGB_FACTORS: dict[str, tuple[tuple[tuple[float, float, float], ...], tuple[float, float, float]]] = {
    "wan21": (_WAN21_RGB, (-0.1835, -0.0868, -0.3360)),
    "wan22": (_WAN22_RGB, (0.0317, -0.0878, -0.1388)),
}
_FORMAT_BY_CHANNELS = {len(factors): name for name, (factors, _) in RGB_FACTORS.items()}

PreviewSink = Callable[[Any, int, int], None]  # (PIL image, value, total)
_standalone_sink: PreviewSink | None = None


def set_preview_sink(sink: PreviewSink | None) -> None:
    """Standalone: receive ``(image, step, total)`` for every preview (None turns previews off)."""
    global _standalone_sink
    _standalone_sink = sink


def standalone_sink() -> PreviewSink | None:
    return _standalone_sink


def previews_enabled() -> bool:
    """Whether anyone will look at previews; samplers skip making them otherwise."""
    cli_args = comfy_module("comfy.cli_args")
    if cli_args is not None:
        method = getattr(getattr(cli_args, "args", None), "preview_method", None)
        method = getattr(method, "value", method)  # ComfyUI's LatentPreviewMethod enum
        return method is not None and str(method) != "none"
    return _standalone_sink is not None


def preview_size() -> int:
    """Longest side of a preview (ComfyUI's ``--preview-size``, default 512)."""
    cli_args = comfy_module("comfy.cli_args")
    size = getattr(getattr(cli_args, "args", None), "preview_size", None) if cli_args else None
    return int(size) if size else DEFAULT_PREVIEW_SIZE


def format_name(latent_format: Any, channels: int) -> str:
    """``"wan21"``/``"wan22"`` from a name, a LatentFormat, or (None) the channel count."""
    name = getattr(latent_format, "name", latent_format)
    if name is None:
        name = _FORMAT_BY_CHANNELS.get(channels)
    if name not in RGB_FACTORS:
        raise ValueError(f"no preview colours for latent format {latent_format!r} "
                         f"with {channels} channels; known: {sorted(RGB_FACTORS)}")
    expected = len(RGB_FACTORS[name][0])
    if channels != expected:
        raise ValueError(f"latent format {name} has {expected} channels, the latent has {channels}")
    return name


def latent_to_rgb(x0: torch.Tensor, latent_format: Any = None, *, frames: int = 1) -> torch.Tensor:
    """``[B, C, T, h, w]`` model-space latent -> ``[n, h, w, 3]`` float 0..1 for batch item 0.

    ``frames`` latent frames are taken evenly from first to last (1: the first frame only).
    """
    if x0.ndim != 5:
        raise ValueError(f"expected a 5-D video latent [B, C, T, h, w], got shape {tuple(x0.shape)}")
    factors, bias = RGB_FACTORS[format_name(latent_format, x0.shape[1])]
    video = x0[0].detach().float()  # [C, T, h, w]
    count = max(1, min(int(frames), video.shape[1]))
    picked = torch.linspace(0, video.shape[1] - 1, count).round().long().unique()
    weights = torch.tensor(factors, dtype=video.dtype, device=video.device)  # [C, 3]
    offset = torch.tensor(bias, dtype=video.dtype, device=video.device)
    rgb = torch.einsum("cthw,cr->thwr", video[:, picked.to(video.device)], weights) + offset
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0).cpu()


def latent_preview(x0: torch.Tensor, latent_format: Any = None, *, frames: int = 1):
    """A PIL image of ``x0`` (the chosen frames side by side), or None when previews are off."""
    if not previews_enabled():
        return None
    return rgb_strip_image(latent_to_rgb(x0, latent_format, frames=frames))


def rgb_strip_image(frames_rgb: torch.Tensor):
    """``[n, h, w, 3]`` 0..1 -> one PIL image with the frames left to right."""
    from PIL import Image

    strip = torch.cat(list(frames_rgb), dim=1)  # [h, n*w, 3]
    pixels = strip.mul(255).to(torch.uint8).numpy()  # truncates, as ComfyUI's previews do
    return Image.fromarray(pixels)
