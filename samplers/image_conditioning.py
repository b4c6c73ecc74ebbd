"""Start (and end) images -> image-to-video conditioning for every Wan image-to-video form.

Two forms exist and the sampler keeps the one the model was trained with:
* extra input channels ``y`` (Wan 2.1 I2V / FLF2V, Wan 2.2 A14B I2V): 4 mask channels saying
  which frames are given + the VAE latent of the given frames with zeros elsewhere, plus the
  CLIP-vision tokens of the image(s);
* clean first latent frame(s) (Wan 2.2 TI2V 5B and TI2V-style models): the image's latent is
  pasted into the video latent and its tokens get timestep 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import host_memory
from ..core.conditioning import FIRST_FRAMES_KEY, VideoDiTConditioning
from ..core.finite import all_finite
from ..core.hooks import NO_HOOKS, Hooks
from ..core.latent_formats import LATENT_FORMAT_KEY
from ..errors import InputError


def fit_image(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE [N,H,W,3] -> [N,height,width,3]: centre-crop to the target aspect, then resize.

    Cropping (not stretching) keeps proportions; resizing uses antialiased bicubic.
    """
    frames = image.movedim(-1, 1).float()
    _, _, h, w = frames.shape
    target = width / height
    if w / h > target:        # too wide: crop the sides
        new_w = max(1, round(h * target))
        left = (w - new_w) // 2
        frames = frames[:, :, :, left:left + new_w]
    elif w / h < target:      # too tall: crop top and bottom
        new_h = max(1, round(w / target))
        top = (h - new_h) // 2
        frames = frames[:, :, top:top + new_h]
    return resize_images(frames.movedim(1, -1), width, height)


def resize_images(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """IMAGE ``[N, h, w, C]`` -> ``[N, height, width, C]`` (antialiased bicubic, clamped to
    0..1); the aspect is the caller's business."""
    frames = images.movedim(-1, 1).float()
    if frames.shape[-2:] != (height, width):
        frames = F.interpolate(frames, size=(height, width), mode="bicubic", antialias=True,
                               align_corners=False)
    return frames.clamp(0, 1).movedim(1, -1)


def checked_frames(images, input: str, *, fix: str, single_image: bool = True) -> torch.Tensor:
    """An IMAGE input as float32 CPU frames ``[N, H, W, 3]`` (an alpha channel dropped; a single
    ``[H, W, 3]`` image taken as one frame when ``single_image``), or an error naming
    ``input``: another shape, no frames, or a NaN or infinite value (it would end as a black
    clip)."""
    dims = (3, 4) if single_image else (4,)
    if not isinstance(images, torch.Tensor) or images.ndim not in dims \
            or images.shape[-1] not in (3, 4) or images.numel() == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"expected IMAGE frames [frames, height, width, 3], got {shape}",
                         input=input, fix=fix)
    frames = (images if images.ndim == 4 else images[None])[..., :3].float().cpu()
    if not all_finite(frames):
        raise InputError(f"{input} contains NaN or infinite values", input=input,
                         fix="check the node that made it")
    return frames


def frame_count_choices(frames: int, temporal: int) -> str:
    """The valid (4k+1) frame counts on either side of ``frames``, as a fix names them:
    "77 or 81"."""
    lower = max(1, (frames - 1) // temporal * temporal + 1)
    return f"{lower} or {lower + temporal}"


def check_video_size(vae, width: int, height: int, length: int, batch_size: int = 1) -> None:
    fmt = vae.latent_format
    check_fits_in_memory(width, height, length, batch_size)
    multiple = fmt.spatial_factor * 2  # the DiT patches latents 2x2
    if (length - 1) % fmt.temporal_factor:
        raise InputError(f"length must be 4k+1 frames, got {length}", input="length",
                         fix=f"use {frame_count_choices(length, fmt.temporal_factor)} (Wan's "
                         "default is 81)")
    for name, value in (("width", width), ("height", height)):
        if value % multiple:
            lower = max(multiple, value // multiple * multiple)
            raise InputError(f"{name} must be a multiple of {multiple} for this VAE, got {value}",
                             input=name, fix=f"use {lower} or {lower + multiple}")


# A decoded clip is an IMAGE of float32 RGB: 12 bytes per pixel per frame.
DECODED_BYTES_PER_PIXEL = 3 * 4


def check_fits_in_memory(width: int, height: int, length: int, batch_size: int = 1, *,
                         available: int | None = None) -> None:
    """Refuse a clip whose decoded frames alone could not fit the free system memory, before
    any latent is made or any step sampled; the message says what length would fit."""
    available = host_memory.available_ram_bytes() if available is None else available
    per_frame = width * height * DECODED_BYTES_PER_PIXEL * max(1, batch_size)
    need = per_frame * length
    if available is None or need <= available:
        return
    frames = available // per_frame
    fitting = (frames - 1) // 4 * 4 + 1 if frames >= 1 else 0
    fix = (f"use length {fitting} or less at {width}x{height}" if fitting >= 1 else
           "use a smaller width and height")
    if batch_size > 1:
        fix += ", or batch_size 1"
    raise InputError(f"{batch_size} x {length} frames of {width}x{height} need "
                     f"{host_memory.gib(need)} once decoded, but only "
                     f"{host_memory.gib(available)} of memory is free", input="length",
                     fix=fix + " (or free memory by closing other programs)")


def image_to_video(vae, conditioning: VideoDiTConditioning, start_image: torch.Tensor,
                   width: int, height: int, length: int, *, end_image: torch.Tensor | None = None,
                   clip_vision_output=None, batch_size: int = 1, hooks: Hooks = NO_HOOKS
                   ) -> tuple[VideoDiTConditioning, dict]:
    check_video_size(vae, width, height, length, batch_size)
    fmt = vae.latent_format
    start = fit_image(start_image[:1], width, height)
    end = fit_image(end_image[-1:], width, height) if end_image is not None else None

    # The given frames, with zeros (mid-grey in VAE space) elsewhere, encoded as a video.
    pixels = torch.full((length, height, width, 3), 0.5)
    pixels[0] = start[0]
    if end is not None:
        pixels[-1] = end[0]
    latent_shape = fmt.latent_shape(1, length, height, width)
    extras = dict(conditioning.extras)
    concat = None
    if fmt.channels == 16:
        given = fmt.normalize(vae.encode(pixels, hooks=hooks))  # [1, 16, t, h, w]
        mask = torch.zeros(1, length + fmt.temporal_factor - 1, latent_shape[3], latent_shape[4])
        mask[:, :fmt.temporal_factor] = 1                       # the first frame counts 4 times
        if end is not None:
            mask[:, -1] = 1
        mask = mask.view(1, latent_shape[2], fmt.temporal_factor, *latent_shape[3:]).transpose(1, 2)
        concat = torch.cat([mask, given], dim=1)                # [1, 4 + 16, t, h, w]
        extras[FIRST_FRAMES_KEY] = given[:, :, :1].clone()
    else:
        extras[FIRST_FRAMES_KEY] = fmt.normalize(vae.encode(start, hooks=hooks))
    clip = None
    if clip_vision_output is not None:
        tokens = clip_vision_output.penultimate
        clip = tokens.reshape(1, -1, tokens.shape[-1])          # FLF2V: start + end tokens
    out_cond = conditioning.replace(concat_latent=concat, clip_features=clip, extras=extras)
    latent = {"samples": torch.zeros(batch_size, *latent_shape[1:]), LATENT_FORMAT_KEY: fmt.name}
    return out_cond, latent
