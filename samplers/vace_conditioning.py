"""Control video, mask and reference images -> the VACE context (Wan 2.1 VACE, Wan 2.2 VACE-Fun).

VACE models read a second input beside the noisy latent, the "context", built as the Wan
VACE reference code builds it:

* the control video in [-1, 1] is split by the mask (white = regenerate) into the part to keep
  (``video * (1 - mask)``, "inactive") and the part to regenerate (``video * mask``,
  "reactive"); both are VAE-encoded and normalised like the latent the model samples, and
  stacked on the channel axis (16 + 16);
* the mask is folded onto the latent grid: each 8x8 block of pixels becomes 64 channels, and
  the frames are subsampled to latent frames by nearest-exact interpolation (64 channels);
* each reference image is letterboxed onto a white frame of the video's size, encoded alone as
  a one-frame clip and put in front of the video along time (its reactive and mask channels are
  zero); the sampled latent gets one extra frame per reference, which the sampler drops.

A missing control video is grey (zero in [-1, 1]); a missing mask regenerates everything. The
mask is binarised at 0.5 for the mask channels too (the reference binarises only the split), so
soft edges from a compressed mask video cannot say "regenerate half of this pixel".
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from ..core.conditioning import VACE_KEY, VaceInputs, VideoDiTConditioning
from ..core.finite import all_finite
from ..core.hooks import NO_HOOKS, Hooks
from ..core.latent_formats import LATENT_FORMAT_KEY, WAN21
from ..errors import InputError
from .image_conditioning import check_video_size, checked_frames, fit_image, resize_images

# Each reference image is one more latent frame the model attends to; Wan VACE composes a few
# (a face, an object, a background). More than this is refused rather than silently diluted.
MAX_REFERENCE_IMAGES = 3

# How a control video (and mask) of another size is brought to width x height.
FIT_MODES = ("crop", "pad", "stretch")

GREY = 0.5   # 0 in the [-1, 1] range the VAE sees: "nothing here"


def vace_conditioning(vae, conditioning: VideoDiTConditioning, width: int, height: int,
                      length: int, *, strength: float = 1.0,
                      control_video: torch.Tensor | None = None,
                      control_mask: torch.Tensor | None = None,
                      reference_images: torch.Tensor | None = None, fit: str = "crop",
                      hooks: Hooks = NO_HOOKS) -> tuple[VideoDiTConditioning, dict]:
    """The conditioning with ``extras[VACE_KEY]`` set, and an empty LATENT for the sampler.

    ``control_video`` is an IMAGE ``[length, H, W, 3]``; ``control_mask`` a MASK ``[1 or
    length, H, W]`` (or an IMAGE, read as its grey level); ``reference_images`` an IMAGE with one
    reference per frame. Every input is checked before anything is encoded.
    """
    _check_conditioning(conditioning)
    check_video_size(vae, width, height, length)
    fmt = vae.latent_format
    if fmt.channels != WAN21.channels or fmt.spatial_factor != WAN21.spatial_factor:
        raise InputError(f"VACE models work on Wan 2.1 VAE latents; {vae.file_name} makes "
                         f"{fmt.channels}-channel latents", input="vae",
                         fix="load wan_2.1_vae.safetensors in VideoDiT VAE Loader (Wan 2.2 "
                             "VACE-Fun A14B uses it too)")
    if not math.isfinite(strength) or strength < 0:
        raise InputError(f"strength must be a finite number >= 0, got {strength}",
                         input="strength", fix="use 1.0 (as trained); 0 turns VACE off")
    if fit not in FIT_MODES:
        raise InputError(f"unknown fit {fit!r}", input="fit", fix=f"use one of {FIT_MODES}")
    video = _check_images(control_video, "control_video")
    mask = _check_mask(control_mask)
    references = _check_images(reference_images, "reference_images")
    _check_frames(video, mask, length)
    if video is not None and mask is not None and video.shape[1:3] != mask.shape[1:3]:
        raise InputError(f"control_mask is {_size(mask)} but control_video is {_size(video)}",
                         input="control_mask", fix="give a mask the size of the control video "
                         "(load both with the same size settings)")
    if references is not None and references.shape[0] > MAX_REFERENCE_IMAGES:
        raise InputError(f"{references.shape[0]} reference images; Wan VACE takes at most "
                         f"{MAX_REFERENCE_IMAGES} here (each becomes one more latent frame in "
                         "front of the clip)", input="reference_images",
                         fix=f"pass {MAX_REFERENCE_IMAGES} or fewer, or join several subjects "
                             "into one image")

    video, mask = control_pixels(video, mask, width, height, length, fit)
    canvases = [] if references is None else [reference_canvas(image, width, height)
                                               for image in references]
    context = encode_vace_context(vae, video, mask, canvases, hooks=hooks)
    vace = VaceInputs(context=context, strength=float(strength), reference_frames=len(canvases))
    out_cond = conditioning.replace(extras={**conditioning.extras, VACE_KEY: vace})
    samples = torch.zeros(1, fmt.channels, context.shape[2], *context.shape[3:])
    return out_cond, {"samples": samples, LATENT_FORMAT_KEY: fmt.name}


# -- pixels ---------------------------------------------------------------------------------------
def control_pixels(video: torch.Tensor | None, mask: torch.Tensor | None, width: int,
                   height: int, length: int, fit: str = "crop"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Control video ``[length, height, width, 3]`` in 0..1 and binary mask ``[length, height,
    width]`` (1 = regenerate), brought to the frame size with ``fit``.

    ``pad`` scales the clip to fit inside the frame and centres it: the border is grey in the
    video and always regenerated; with no mask given, the clip itself is kept (outpainting).
    """
    if video is None:
        video = torch.full((length, height, width, 3), GREY)
        keep_clip = False
    else:
        keep_clip = fit == "pad" and mask is None
    if mask is None:
        mask = torch.zeros(1, *video.shape[1:3]) if keep_clip else torch.ones(1, *video.shape[1:3])
    video = _fit(video, width, height, fit, fill=GREY)
    mask = _fit(mask[..., None], width, height, fit, fill=1.0)[..., 0]
    mask = (mask > 0.5).float().expand(length, height, width)
    if keep_clip and not mask.any():
        raise InputError(f"fit is pad, but the control video already fills {width}x{height}, so "
                         "the whole clip would be kept and nothing generated", input="fit",
                         fix="use crop to follow the control video, or make width or height "
                             "larger than the clip to outpaint")
    return video, mask


def _fit(frames: torch.Tensor, width: int, height: int, fit: str, fill: float) -> torch.Tensor:
    """``[N, h, w, C]`` 0..1 -> ``[N, height, width, C]``."""
    if frames.shape[1:3] == (height, width):
        return frames
    if fit == "crop":
        return fit_image(frames, width, height)
    if fit == "stretch":
        return resize_images(frames, width, height)
    h, w = frames.shape[1:3]
    scale = min(width / w, height / h)
    new_h, new_w = min(height, max(1, round(h * scale))), min(width, max(1, round(w * scale)))
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas = torch.full((frames.shape[0], height, width, frames.shape[3]), fill)
    canvas[:, top:top + new_h, left:left + new_w] = resize_images(frames, new_w, new_h)
    return canvas


def reference_canvas(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """One reference ``[h, w, 3]`` 0..1, scaled to fit inside ``width x height`` (bilinear, as
    the reference code does) and centred on white: ``[height, width, 3]``.

    Sizes are truncated and the border split as the reference code does, so the subject sits on
    the same pixels. Shrinking is antialiased (the reference code is not) so a large photo does
    not alias; enlarging is the same either way.
    """
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.float()
    scale = min(height / h, width / w)
    new_h, new_w = int(h * scale), int(w * scale)
    resized = F.interpolate(image.movedim(-1, 0)[None].float(), size=(new_h, new_w),
                            mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas = torch.ones(height, width, 3)
    canvas[top:top + new_h, left:left + new_w] = resized[0].movedim(0, -1)
    return canvas


# -- latents --------------------------------------------------------------------------------------
def fold_mask(mask: torch.Tensor, spatial: int, temporal: int) -> torch.Tensor:
    """Binary mask ``[T, H, W]`` -> ``[spatial², latent frames, H/spatial, W/spatial]``.

    Every pixel of a ``spatial x spatial`` block gets its own channel, so the model sees the
    mask at full resolution; latent frame ``i`` takes pixel frame ``floor((i + 0.5) * T / t)``
    (nearest-exact), as the reference code samples it.
    """
    cells = rearrange(mask, "t (h sh) (w sw) -> (sh sw) t h w", sh=spatial, sw=spatial)
    latent_frames = (mask.shape[0] - 1) // temporal + 1
    return F.interpolate(cells[None], size=(latent_frames, *cells.shape[2:]),
                         mode="nearest-exact")[0]


def encode_vace_context(vae, video: torch.Tensor, mask: torch.Tensor,
                        references: list[torch.Tensor] = (), *, hooks: Hooks = NO_HOOKS
                        ) -> torch.Tensor:
    """Video ``[T, H, W, 3]`` 0..1, binary mask ``[T, H, W]`` and reference canvases
    ``[H, W, 3]`` -> context ``[1, 2C + s², R + t, h, w]`` (normalised latents, then mask)."""
    fmt = vae.latent_format
    signed = video * 2 - 1
    regenerate = mask[..., None]
    # Two passes instead of one batch of two: half the activations on the device.
    inactive = fmt.normalize(vae.encode((signed * (1 - regenerate) + 1) / 2, hooks=hooks))
    reactive = fmt.normalize(vae.encode((signed * regenerate + 1) / 2, hooks=hooks))
    latents = torch.cat([inactive, reactive], dim=1)
    folded = fold_mask(mask, fmt.spatial_factor, fmt.temporal_factor)[None]
    if references:
        refs = torch.cat([fmt.normalize(vae.encode(image[None], hooks=hooks))
                          for image in references], dim=2)
        latents = torch.cat([torch.cat([refs, torch.zeros_like(refs)], dim=1), latents], dim=2)
        folded = torch.cat([folded.new_zeros(*folded.shape[:2], len(references),
                                             *folded.shape[3:]), folded], dim=2)
    return torch.cat([latents, folded], dim=1).contiguous()


# -- checks ---------------------------------------------------------------------------------------
def _check_conditioning(conditioning) -> None:
    if not isinstance(conditioning, VideoDiTConditioning):
        raise InputError(f"expected VideoDiT conditioning, got {type(conditioning).__name__}",
                         input="conditioning", fix="connect the output of VideoDiT Text Encode")
    if VACE_KEY in conditioning.extras:
        raise InputError("this conditioning already carries VACE inputs from another VideoDiT "
                         "VACE Conditioning node", input="conditioning",
                         fix="connect VideoDiT Text Encode directly, and give control video, "
                             "mask and reference images to one VACE Conditioning node")


def _check_images(images, name: str) -> torch.Tensor | None:
    if images is None:
        return None
    return checked_frames(images, name, fix="connect an IMAGE output, e.g. VideoDiT Load Video")


def _check_mask(mask) -> torch.Tensor | None:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3, 4) \
            or mask.ndim == 4 and mask.shape[-1] not in (1, 3, 4) or mask.numel() == 0:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InputError(f"expected a MASK [frames, height, width] or a black-and-white IMAGE, "
                         f"got {shape}", input="control_mask",
                         fix="connect a MASK, or a mask video from VideoDiT Load Video")
    if mask.ndim == 4:  # a mask video loaded as IMAGE: its grey level
        mask = mask[..., :3].float().mean(dim=-1)
    mask = (mask if mask.ndim == 3 else mask[None]).float().cpu()
    if not all_finite(mask):
        raise InputError("control_mask contains NaN or infinite values", input="control_mask",
                         fix="check the node that made it")
    return mask


def _check_frames(video: torch.Tensor | None, mask: torch.Tensor | None, length: int) -> None:
    if video is not None and video.shape[0] != length:
        frames = video.shape[0]
        usable = (min(frames, 4097) - 1) // 4 * 4 + 1
        fix = f"set length to {usable}"
        if usable != frames:
            fix += f" and VideoDiT Load Video's frame_limit to {usable}"
        if frames > length:
            fix += f", or set frame_limit to {length} to use the first {length} frames"
        raise InputError(f"control_video has {frames} frames but length is {length}",
                         input="control_video", fix=fix)
    if mask is not None and mask.shape[0] not in (1, length):
        raise InputError(f"control_mask has {mask.shape[0]} frames; it needs 1 (the same mask "
                         f"for every frame) or one per frame ({length})", input="control_mask",
                         fix=f"give one mask, or a mask video of {length} frames")


def _size(frames: torch.Tensor) -> str:
    return f"{frames.shape[2]}x{frames.shape[1]}"
