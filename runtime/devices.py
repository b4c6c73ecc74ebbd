"""Which device computes, where idle weights wait, how much memory there is, and making room.

Inside ComfyUI every answer comes from ``comfy.model_management`` so our models share VRAM
with ComfyUI's own (its ``--reserve-vram`` included). Standalone we pick cuda, then mps, then
cpu (``VIDEODIT_DEVICE`` overrides) and keep ``VIDEODIT_RESERVE_VRAM`` GB (default 0.4, as
ComfyUI does on Linux) free for the desktop and other programs.
"""
from __future__ import annotations

import os

import torch

from ..core.host_memory import available_ram_bytes
from .host import comfy_module

DEVICE_ENV = "VIDEODIT_DEVICE"
RESERVE_ENV = "VIDEODIT_RESERVE_VRAM"
DEFAULT_RESERVE_GB = 0.4


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


def shares_host_memory(device: torch.device) -> bool:
    """Whether weights "on" this device live in the system RAM they wait in (the CPU)."""
    return torch.device(device).type == "cpu"


def free_bytes(device: torch.device) -> int | None:
    """Memory free on ``device`` now (PyTorch's cached but unused blocks count as free);
    None when nobody can say."""
    device = torch.device(device)
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        return int(mm.get_free_memory(device))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return available_ram_bytes()


def total_bytes(device: torch.device) -> int | None:
    device = torch.device(device)
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        return int(mm.get_total_memory(device))
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def reserved_bytes(device: torch.device) -> int:
    """Memory left alone for other programs (ComfyUI: its ``--reserve-vram``)."""
    if shares_host_memory(device):
        return 0
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        return int(mm.extra_reserved_memory())
    try:
        reserve_gb = float(os.environ.get(RESERVE_ENV, DEFAULT_RESERVE_GB))
    except ValueError:
        reserve_gb = DEFAULT_RESERVE_GB
    return int(max(0.0, reserve_gb) * 1024 ** 3)


def pin_limit_bytes() -> int:
    """How much offloaded weight may be page-locked for fast copies: most of the RAM, but
    Windows gets into trouble well before that."""
    total = total_bytes(torch.device("cpu")) or 0
    return int(total * (0.45 if os.name == "nt" else 0.9))
