"""Live previews: whether anyone wants them, how big, and where they go standalone.

The pictures themselves are drawn by :mod:`..core.latent_preview` (ComfyUI's "latent2rgb"
colours, kept with each latent format). Wan has no TAESD decoder in ComfyUI either, so every
preview method other than ``none`` gets that one.

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

from ..core.latent_preview import preview_image
from .host import comfy_module

DEFAULT_PREVIEW_SIZE = 512

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


def latent_preview(x0: torch.Tensor, latent_format: Any = None, *, frames: int = 1):
    """A PIL image of ``x0`` (the chosen frames side by side), or None when previews are off."""
    if not previews_enabled():
        return None
    return preview_image(x0, latent_format, frames=frames)
