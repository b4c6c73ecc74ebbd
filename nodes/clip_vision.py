"""Nodes of the 'clip_vision' stage: CLIP ViT-H/14 image features for Wan 2.1 image-to-video."""
from __future__ import annotations

from ._base import videodit_node


@videodit_node("VideoDiTCLIPVisionLoader", "VideoDiT CLIP Vision Loader", "loaders")
class VideoDiTCLIPVisionLoader:
    DESCRIPTION = ("Loads the CLIP ViT-H/14 image encoder that Wan 2.1 image-to-video and "
                   "first-last-frame models need (clip_vision_h.safetensors). Wan 2.2 models do "
                   "not use it. Also reads open-clip and Wan's original .pth layouts.")
    RETURN_TYPES = ("VIDEODIT_CLIP_VISION",)
    RETURN_NAMES = ("clip_vision",)
    OUTPUT_TOOLTIPS = ("The image encoder, for VideoDiT CLIP Vision Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..model_loaders.clip_vision_loader import DTYPE_CHOICES
        from ..runtime.model_folders import list_files

        return {"required": {
            "clip_name": (list_files("clip_vision"), {
                "tooltip": "CLIP vision file from models/clip_vision, e.g. clip_vision_h.safetensors."}),
            "dtype": (list(DTYPE_CHOICES), {
                "default": "default",
                "tooltip": "Weight precision. default: fp16 on a GPU (as Wan runs it), fp32 on CPU."}),
        }}

    def load(self, clip_name, dtype):
        from ..model_loaders.clip_vision_loader import load_clip_vision
        from ..runtime.devices import compute_device
        from ..runtime.memory import ManagedModel
        from ..runtime.model_folders import resolve

        path = resolve("clip_vision", clip_name, input="clip_name")
        return (load_clip_vision(path, dtype=dtype, name=clip_name, device=compute_device(),
                                 place=ManagedModel),)


@videodit_node("VideoDiTCLIPVisionEncode", "VideoDiT CLIP Vision Encode", "conditioning")
class VideoDiTCLIPVisionEncode:
    DESCRIPTION = ("Encodes the start image (and optionally the end image) with CLIP ViT-H/14 "
                   "into the features Wan 2.1 image-to-video reads (penultimate layer, 257 "
                   "tokens per image). Connect the result to VideoDiT Image To Video.")
    RETURN_TYPES = ("VIDEODIT_CLIP_VISION_OUTPUT",)
    RETURN_NAMES = ("clip_vision_output",)
    OUTPUT_TOOLTIPS = ("Image features [images, 257, 1280]: the start image, then the end image "
                       "when one is given (first-last-frame).",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip_vision": ("VIDEODIT_CLIP_VISION", {"tooltip": "From VideoDiT CLIP Vision Loader."}),
                "start_image": ("IMAGE", {
                    "tooltip": "The first frame of the video. Only its first image is used."}),
                "crop": (["none", "center"], {
                    "default": "none",
                    "tooltip": "none: squash the whole image to 224x224, as Wan does. center: "
                               "scale the short side to 224 and cut the centre square, as "
                               "ComfyUI's CLIP Vision Encode does with crop=center."}),
            },
            "optional": {
                "end_image": ("IMAGE", {
                    "tooltip": "The last frame, for first-last-frame (FLF2V) models. Only its "
                               "first image is used."}),
            },
        }

    def encode(self, clip_vision, start_image, crop, end_image=None):
        import torch

        from ..errors import InputError
        from ..model_loaders.clip_vision_loader import CLIPVision

        if not isinstance(clip_vision, CLIPVision):
            raise InputError(f"expected a VideoDiT CLIP vision model, got {type(clip_vision).__name__}",
                             input="clip_vision", fix="connect VideoDiT CLIP Vision Loader")
        images = []
        for input_name, image in (("start_image", start_image), ("end_image", end_image)):
            if image is None:
                continue
            if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] < 3 \
                    or image.shape[0] < 1:
                raise InputError("expected an IMAGE [frames, height, width, 3]", input=input_name,
                                 fix="connect a Load Image or VideoDiT Load Video output")
            images.append(image[:1, ..., :3])
        if len(images) == 2 and images[0].shape != images[1].shape:
            # Each image is resized on its own, so different sizes are fine.
            return (_concat(clip_vision.encode(images[0], crop=crop),
                            clip_vision.encode(images[1], crop=crop)),)
        return (clip_vision.encode(torch.cat(images), crop=crop),)


def _concat(first, second):
    import torch

    from ..networks.clip_vision import CLIPVisionOutput

    return CLIPVisionOutput(penultimate=torch.cat([first.penultimate, second.penultimate]))


NODE_CLASSES: list[type] = [VideoDiTCLIPVisionLoader, VideoDiTCLIPVisionEncode]
