"""The VACE conditioning node: control video, mask and reference images for Wan VACE models."""
from __future__ import annotations

from ._base import validate_numbers, videodit_node
from .conditioning import _LENGTH, _SIZE, validate_video_shape


@videodit_node("VideoDiTVACEConditioning", "VideoDiT VACE Conditioning", "conditioning")
class VideoDiTVACEConditioning:
    DESCRIPTION = ("Adds a VACE context for Wan VACE models (Wan 2.1 VACE 1.3B/14B, Wan 2.2 "
                   "VACE-Fun A14B): a control video to follow (depth, pose, edges or a clip to "
                   "edit), a mask of what to regenerate (white) and what to keep (black), and "
                   "reference images the video should show. With nothing connected it is "
                   "plain text-to-video. Use the Wan 2.1 VAE.")
    RETURN_TYPES = ("VIDEODIT_CONDITIONING", "LATENT")
    RETURN_NAMES = ("conditioning", "latent")
    OUTPUT_TOOLTIPS = ("The text conditioning with the VACE context added; for VideoDiT Sampler "
                       "with a VACE model.",
                       "An empty latent for the sampler: the clip's latent frames plus one per "
                       "reference image (the sampler drops those from its output).")
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        from ..samplers.vace_conditioning import FIT_MODES, MAX_REFERENCE_IMAGES

        return {
            "required": {
                "conditioning": ("VIDEODIT_CONDITIONING", {
                    "tooltip": "From VideoDiT Text Encode."}),
                "vae": ("VIDEODIT_VAE", {
                    "tooltip": "The Wan 2.1 VAE (wan_2.1_vae.safetensors); it encodes the "
                               "control video and the reference images."}),
                "width": ("INT", {"default": 832, **_SIZE, "tooltip": "Video width in pixels."}),
                "height": ("INT", {"default": 480, **_SIZE, "tooltip": "Video height in pixels."}),
                "length": ("INT", dict(_LENGTH)),
                "strength": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                    "tooltip": "How strongly the VACE hints steer the model: 1 as trained, "
                               "lower follows the control video more loosely, 0 ignores it."}),
                "fit": (list(FIT_MODES), {
                    "default": "crop",
                    "tooltip": "When the control video or mask is not width x height. crop: "
                               "scale to cover the frame and cut the centre (keeps the "
                               "aspect). pad: scale to fit inside and centre it; the border is "
                               "generated (outpainting), and with no mask the clip itself is "
                               "kept. stretch: scale to the frame (aspect changes)."}),
            },
            "optional": {
                "control_video": ("IMAGE", {
                    "tooltip": "Frames the video follows, exactly `length` of them: a depth, "
                               "pose or edge video, or the clip to edit (with a mask). Not "
                               "connected: grey, i.e. no control."}),
                "control_mask": ("MASK,IMAGE", {
                    "tooltip": "White = regenerate, black = keep the control video's pixels. "
                               "One mask for every frame or one per frame, the size of the "
                               "control video; a black-and-white mask video from VideoDiT "
                               "Load Video works too (binarised at 50% grey). Not connected: "
                               "regenerate everything."}),
                "reference_images": ("IMAGE", {
                    "tooltip": f"Up to {MAX_REFERENCE_IMAGES} images (a batch) of a subject, "
                               "object or background the video should show. Each is scaled "
                               "to fit the frame on a white background; give it a plain white "
                               "background for best results."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, length, strength):
        shape = validate_video_shape(width, height, length)
        numbers = validate_numbers(cls, strength=strength)
        found = [text for text in (shape, numbers) if text is not True]
        return "\n".join(found) or True

    def prepare(self, conditioning, vae, width, height, length, strength, fit="crop",
                control_video=None, control_mask=None, reference_images=None):
        from ..runtime.hooks import host_hooks
        from ..samplers.vace_conditioning import vace_conditioning

        return vace_conditioning(vae, conditioning, width, height, length, strength=strength,
                                 control_video=control_video, control_mask=control_mask,
                                 reference_images=reference_images, fit=fit, hooks=host_hooks())


NODE_CLASSES: list[type] = [VideoDiTVACEConditioning]
