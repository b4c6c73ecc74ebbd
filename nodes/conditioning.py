"""Nodes of the conditioning stage: empty video latents and image-to-video conditioning."""
from __future__ import annotations

import torch

from ._base import videodit_node

_SIZE = {"min": 16, "max": 8192, "step": 16}
_LENGTH = {"default": 81, "min": 1, "max": 4097, "step": 4,
           "tooltip": "Frames, 4k+1 (1, 5, ..., 81). Wan is trained at 81 frames / 16 fps; "
                      "other counts stop with an error naming the nearest valid ones."}


def validate_video_shape(width=None, height=None, length=None, batch_size=None):
    """``VALIDATE_INPUTS`` of the size widgets: a size or length no VAE takes, or frames that
    could never fit in memory, is refused when the workflow is queued, before any model loads.
    Naming these inputs turns ComfyUI's own range checks off for them, so ranges are checked
    here too. Linked inputs arrive as None and are checked when the node runs."""
    from ..core.latent_formats import FORMATS
    from ..errors import InputError
    from ..samplers.image_conditioning import check_fits_in_memory, frame_count_choices

    multiple = min(fmt.spatial_factor * 2 for fmt in FORMATS.values())
    temporal = min(fmt.temporal_factor for fmt in FORMATS.values())
    found = []
    for name, value, low, high in (("width", width, _SIZE["min"], _SIZE["max"]),
                                   ("height", height, _SIZE["min"], _SIZE["max"]),
                                   ("length", length, _LENGTH["min"], _LENGTH["max"]),
                                   ("batch_size", batch_size, 1, 64)):
        if value is None:
            continue
        if not low <= value <= high:
            found.append(InputError(f"{value} is outside {low}..{high}", input=name,
                                    fix=f"use a value from {low} to {high}"))
        elif name in ("width", "height") and value % multiple:
            lower = max(multiple, value // multiple * multiple)
            found.append(InputError(f"must be a multiple of {multiple}, got {value}",
                                    input=name, fix=f"use {lower} or {lower + multiple}"))
        elif name == "length" and (value - 1) % temporal:
            found.append(InputError(f"length must be 4k+1 frames, got {value}", input=name,
                                    fix=f"use {frame_count_choices(value, temporal)} (Wan's "
                                    "default is 81)"))
    if not found and None not in (width, height, length):
        try:
            check_fits_in_memory(width, height, length, batch_size or 1)
        except InputError as err:
            found.append(err)
    return "\n".join(map(str, found)) or True


@videodit_node("VideoDiTEmptyLatent", "VideoDiT Empty Latent", "conditioning")
class VideoDiTEmptyLatent:
    DESCRIPTION = ("An empty video latent shaped for the given VAE (16 channels and 8x for Wan 2.1 "
                   "and 2.2 A14B; 48 channels and 16x for Wan 2.2 5B), for text-to-video.")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Zeros of shape [batch, channels, (length-1)/4+1, height/f, width/f]; the "
                       "sampler replaces them with seeded noise.",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VIDEODIT_VAE", {"tooltip": "The VAE that will decode the result; it sets "
                                                "the latent's channels and scale."}),
            "width": ("INT", {"default": 832, **_SIZE,
                              "tooltip": "Pixels; a multiple of 16 (Wan 2.1) or 32 (Wan 2.2 5B)."}),
            "height": ("INT", {"default": 480, **_SIZE,
                               "tooltip": "Pixels; a multiple of 16 (Wan 2.1) or 32 (Wan 2.2 5B)."}),
            "length": ("INT", dict(_LENGTH)),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                   "tooltip": "Clips sampled together (each gets its own noise)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, length, batch_size):
        return validate_video_shape(width, height, length, batch_size)

    def make(self, vae, width, height, length, batch_size):
        from ..samplers.image_conditioning import check_video_size
        from ..core.latent_formats import LATENT_FORMAT_KEY

        check_video_size(vae, width, height, length, batch_size)
        fmt = vae.latent_format
        samples = torch.zeros(fmt.latent_shape(batch_size, length, height, width))
        return ({"samples": samples, LATENT_FORMAT_KEY: fmt.name},)


@videodit_node("VideoDiTImageToVideo", "VideoDiT Image To Video", "conditioning")
class VideoDiTImageToVideo:
    DESCRIPTION = ("Adds a start image (and optionally an end image) to the conditioning for "
                   "image-to-video. Prepares both forms Wan models use: extra latent channels "
                   "with CLIP tokens (Wan 2.1 I2V/FLF2V, Wan 2.2 A14B I2V) and a clean first "
                   "latent frame (Wan 2.2 5B); the sampler keeps what the model needs.")
    RETURN_TYPES = ("VIDEODIT_CONDITIONING", "LATENT")
    RETURN_NAMES = ("conditioning", "latent")
    OUTPUT_TOOLTIPS = ("The text conditioning with the image conditioning added.",
                       "An empty latent of the requested size, for the sampler.")
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "conditioning": ("VIDEODIT_CONDITIONING", {"tooltip": "From VideoDiT Text Encode."}),
                "vae": ("VIDEODIT_VAE", {"tooltip": "Encodes the image(s); use the model's VAE."}),
                "start_image": ("IMAGE", {
                    "tooltip": "The first frame. Centre-cropped to the target aspect ratio, then "
                               "resized (bicubic, antialiased) to width x height."}),
                "width": ("INT", {"default": 832, **_SIZE, "tooltip": "Video width in pixels."}),
                "height": ("INT", {"default": 480, **_SIZE, "tooltip": "Video height in pixels."}),
                "length": ("INT", dict(_LENGTH)),
            },
            "optional": {
                "end_image": ("IMAGE", {"tooltip": "Optional last frame (first-last-frame models, "
                                                   "e.g. Wan 2.1 FLF2V). Cropped and resized "
                                                   "like the start image."}),
                "clip_vision_output": ("VIDEODIT_CLIP_VISION_OUTPUT", {
                    "tooltip": "From VideoDiT CLIP Vision Encode; needed by Wan 2.1 I2V/FLF2V, "
                               "ignored by models without CLIP input."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, length):
        return validate_video_shape(width, height, length)

    def prepare(self, conditioning, vae, start_image, width, height, length, end_image=None,
                clip_vision_output=None):
        from ..runtime.hooks import host_hooks
        from ..samplers.image_conditioning import image_to_video

        return image_to_video(vae, conditioning, start_image, width, height, length,
                              end_image=end_image, clip_vision_output=clip_vision_output,
                              hooks=host_hooks())


NODE_CLASSES: list[type] = [VideoDiTEmptyLatent, VideoDiTImageToVideo]
