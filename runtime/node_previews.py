"""Pictures shown on a node in ComfyUI's editor, the way its own Preview Image node does it.

An output node's ``{"ui": {"images": [{"filename", "subfolder", "type": "temp"}]}}`` is drawn
on the node by the stock frontend, no extension needed; the files live in ComfyUI's temp folder,
which ComfyUI empties at start. Standalone (the CLI, scripts) nothing is written: the runner
prints what matters instead.
"""
from __future__ import annotations

import uuid

import torch

from . import host, io_folders


def temp_image_previews(images: torch.Tensor, prefix: str) -> list[dict]:
    """IMAGE ``[N, H, W, 3]`` -> the ui entries showing its first picture on the node."""
    if not host.inside_comfyui() or images.ndim != 4 or images.shape[0] == 0:
        return []
    from PIL import Image

    folder = io_folders.get_temp_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}.png"
    pixels = images[0].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    Image.fromarray(pixels.numpy()).save(folder / name)
    return [{"filename": name, "subfolder": "", "type": "temp"}]
