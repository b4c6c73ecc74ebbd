"""Which device computes, where idle weights wait, and how memory is made room for.

Inside ComfyUI every answer comes from ``comfy.model_management`` so our models share VRAM
with ComfyUI's own. Standalone we pick cuda, then mps, then cpu (``VIDEODIT_DEVICE`` overrides).
"""
from __future__ import annotations

import os

import torch

from .host import comfy_module

DEVICE_ENV = "VIDEODIT_DEVICE"


def compute_device() -> torch.device:
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    forced = os.environ.get(DEVICE_ENV)
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def offload_device() -> torch.device:
    """Where weights wait between uses (system RAM unless ComfyUI says otherwise)."""
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        return mm.unet_offload_device()
    return torch.device("cpu")


def free_memory(bytes_needed: int, device: torch.device) -> None:
    """Ask for ``bytes_needed`` free on ``device`` before loading weights there.

    Inside ComfyUI this unloads ComfyUI's (and our registered) models as needed.
    """
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        mm.free_memory(bytes_needed, device)
        return
    if device.type == "cuda":
        torch.cuda.empty_cache()


def soft_empty_cache() -> None:
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()
