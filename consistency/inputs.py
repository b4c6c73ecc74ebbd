"""Validation of the consistency nodes' inputs: IMAGE batches (torch layout conversion
included) and known segment boundaries."""
from __future__ import annotations

import operator

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


def segment_boundaries(segments, frames: int, *, input: str = "segments"
                       ) -> tuple[list[int], int]:
    """Frames where a new rendered segment begins (every start but the leading 0), and how many
    frames at each start are cross-faded with the segment before (0: the pieces just butt).

    ``segments`` is a VIDEODIT_SEGMENTS value (``starts``, ``frames``, ``overlap``) or a plain
    sequence of start frames; ``None`` means no known boundaries.
    """
    if segments is None:
        return [], 0
    fix = ("connect the segments output of the node that rendered these frames, and pass its "
           "frames on whole (no trimming or frame skipping in between)")
    try:
        starts = [operator.index(s) for s in getattr(segments, "starts", segments)]
        overlap = operator.index(getattr(segments, "overlap", 0))
    except TypeError:
        raise InputError(f"expected whole segment start frames, got {segments!r}",
                         input=input, fix=fix) from None
    described = getattr(segments, "frames", frames)
    if described != frames:
        raise InputError(f"the segments describe a clip of {described} frames but the images "
                         f"have {frames}", input=input, fix=fix)
    if not starts or starts[0] != 0:
        raise InputError(f"the first segment must start at frame 0, got starts {starts}",
                         input=input, fix=fix)
    for before, after in zip(starts, starts[1:]):
        if after <= before:
            raise InputError(f"segment starts must increase, got {after} after {before} "
                             f"(starts {starts})", input=input, fix=fix)
    if starts[-1] >= frames:
        raise InputError(f"a segment starts at frame {starts[-1]}, outside the clip of {frames} "
                         f"frames (0..{frames - 1})", input=input, fix=fix)
    if overlap < 0:
        raise InputError(f"overlap must not be negative, got {overlap}", input=input, fix=fix)
    return starts[1:], overlap
