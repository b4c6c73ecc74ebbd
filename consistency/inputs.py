"""Validation of IMAGE inputs for the consistency nodes (torch layout conversion included)."""
from __future__ import annotations

import torch
from einops import rearrange

from ..errors import InputError


def image_to_frames(images, *, input: str, min_frames: int = 1) -> torch.Tensor:
    """ComfyUI IMAGE ``[T, H, W, 3]`` -> ``[T, 3, H, W]`` float32, with errors that say what to do."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"expected an IMAGE batch [frames, height, width, 3], got {shape}",
                         input=input, fix="connect the frames of a clip (e.g. from VideoDiT Load "
                         "Video or VAE Decode)")
    if images.shape[0] < min_frames:
        raise InputError(f"needs at least {min_frames} frames, got {images.shape[0]}",
                         input=input, fix="pass the whole clip, not a single image")
    if min(images.shape[1], images.shape[2]) < 16:
        raise InputError(f"frames of {images.shape[2]}x{images.shape[1]} are too small to "
                         "analyse", input=input, fix="use frames of at least 16x16 pixels")
    return rearrange(images[..., :3].float(), "t h w c -> t c h w").contiguous()


def frames_to_image(frames: torch.Tensor) -> torch.Tensor:
    return rearrange(frames.clamp(0, 1), "t c h w -> t h w c").contiguous()


def matching_reference(reference, frames: torch.Tensor, *, input: str) -> torch.Tensor | None:
    if reference is None:
        return None
    ref = image_to_frames(reference, input=input)
    if ref.shape[0] != frames.shape[0]:
        raise InputError(f"has {ref.shape[0]} frames but the clip has {frames.shape[0]}",
                         input=input, fix="connect the source the clip was made from, with the "
                         "same frame range (its size may differ: it is resized)")
    return ref
