"""Nodes for clips longer than one model window: Extend Video and the Context Windows patch.

Extend Video is one node rather than extra sampler inputs because continuing a clip needs
pixels between the windows: each window is decoded, colour-matched and cross-faded before the
next one is conditioned on its last frames, so the VAE is used inside the loop and the result
is frames, not a latent. Context windows need no decode in between, so they are also a model
patch that any sampler node (text-to-video, image-to-video, SDEdit, FlowEdit) can use.
"""
from __future__ import annotations

from ._base import validate_numbers, videodit_node
from .conditioning import _SIZE
from .sampling import _SEED, _SHIFT, _STEPS, _solvers

_WINDOW = {"default": 81, "min": 5, "max": 1025, "step": 4,
           "tooltip": "Frames per model window, 4k+1: the clip length the model was trained on "
                      "(Wan: 81; the demo model: 17). Longer windows cost more memory per step."}
_OVERLAP = {"default": 17, "min": 1, "max": 1021, "step": 4,
            "tooltip": "Frames, 4k+1, that neighbouring windows share. continue: the last "
                       "frames each new window starts from (motion carries over) and over which "
                       "colour is matched and the seam cross-faded. context windows: frames "
                       "whose velocity two windows blend. More hides seams better and costs "
                       "more windows. About a fifth of the window is usual."}


def _window_problems(window=None, overlap=None):
    """Queue-time check of the window widgets; the length depends on source_video, which is
    not known then, and is checked when the node runs (still before any model work). (The
    naive method ignores overlap, but a value no method could use is refused anyway.) Every
    Wan VAE, the demo's too, makes one latent frame of 4 video frames."""
    from ..samplers.long_video import window_problems

    return window_problems(window, overlap, temporal_factor=4)


@videodit_node("VideoDiTExtendVideo", "VideoDiT Extend Video", "sampling")
class VideoDiTExtendVideo:
    DESCRIPTION = ("Makes a clip longer than one model window without colour drift at the "
                   "seams. continue: renders a window, then each next one starting from the "
                   "last `overlap` frames (image-to-video models: Wan 2.2 5B, Wan 2.1 I2V, "
                   "A14B I2V; VACE models), matches its colour to them and cross-fades the "
                   "seam. context windows: one sampling run over the whole length with the "
                   "model run on overlapping windows (any model, text-to-video too). naive: "
                   "continue from the last frame with no matching, for comparison. With "
                   "source_video it extends that clip instead of rendering the first window.")
    RETURN_TYPES = ("IMAGE", "VIDEODIT_SEGMENTS")
    RETURN_NAMES = ("images", "segments")
    OUTPUT_TOOLTIPS = ("The whole clip, `length` frames (source_video included), decoded.",
                       "Where each window starts in the clip, for VideoDiT Frame Consistency "
                       "and VideoDiT Consistency Report (they then check those seams).")
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        from ..samplers.long_video import METHODS

        return {
            "required": {
                "model": ("VIDEODIT_MODEL", {"tooltip": "From VideoDiT Model Loader or a patch "
                                                        "node (for Wan 2.2 A14B: the high-noise "
                                                        "expert)."}),
                "conditioning": ("VIDEODIT_CONDITIONING", {
                    "tooltip": "From VideoDiT Text Encode; or VideoDiT Image To Video (length = "
                               "window) to start from an image; or VideoDiT VACE Conditioning "
                               "for the first window of a VACE model."}),
                "vae": ("VIDEODIT_VAE", {"tooltip": "The model's VAE: it decodes each window "
                                                    "and encodes the frames the next one starts "
                                                    "from."}),
                "width": ("INT", {"default": 832, **_SIZE, "tooltip": "Video width in pixels."}),
                "height": ("INT", {"default": 480, **_SIZE,
                                   "tooltip": "Video height in pixels."}),
                "length": ("INT", {"default": 145, "min": 5, "max": 16385, "step": 4,
                                   "tooltip": "Frames of the whole clip (source_video included). "
                                              "continue/naive: one window plus whole further "
                                              "windows, each adding window - overlap frames "
                                              "(81, 145, 209 ... for 81/17); context windows: "
                                              "any 4k+1 from one window up."}),
                "window": ("INT", dict(_WINDOW)),
                "overlap": ("INT", dict(_OVERLAP)),
                "method": (list(METHODS), {
                    "default": "continue",
                    "tooltip": "continue: window after window from the last overlap frames, "
                               "colour-matched and cross-faded (image-to-video or VACE models). "
                               "context windows: one run, windows blended every step (any "
                               "model). naive: from the last frame only, no matching (a "
                               "baseline)."}),
                "seed": ("INT", {**_SEED, "tooltip": "Noise seed of the first window; window i "
                                                     "uses seed + i. The first window equals "
                                                     "VideoDiT Sampler's clip with this seed."}),
                "steps": ("INT", dict(_STEPS)),
                "cfg": ("FLOAT", {"default": 5.0, "min": 1.0, "max": 30.0, "step": 0.1,
                                  "tooltip": "Guidance toward the positive and away from the "
                                             "negative prompt; 1 skips the negative pass."}),
                "shift": ("FLOAT", dict(_SHIFT)),
                "sampler": (_solvers(), {"default": "unipc",
                                         "tooltip": "Solver, as in VideoDiT Sampler."}),
                "color_match": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "continue: undo the colour change the model made to the "
                               "frames each new window shares with the clip so far (a "
                               "per-channel gain and offset, applied to the whole window) "
                               "before cross-fading. Acts with image-to-video models that "
                               "redraw those frames (Wan 2.1 I2V, A14B I2V, VACE); Wan 2.2 5B "
                               "keeps them exactly. Off only to compare."}),
            },
            "optional": {
                "source_video": ("IMAGE", {
                    "tooltip": "A clip to extend instead of rendering the first window; its "
                               "size must be width x height and it needs at least `overlap` "
                               "frames."}),
                "model_low_noise": ("VIDEODIT_MODEL", {
                    "tooltip": "Wan 2.2 A14B low-noise expert; takes over below the boundary."}),
                "boundary": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.005,
                                       "tooltip": "Noise level where the low-noise expert takes "
                                                  "over. 0 = Wan's defaults: 0.875 text-to-video, "
                                                  "0.9 image-to-video."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width, height, window, overlap, cfg, shift, boundary=None):
        from .conditioning import validate_video_shape

        problems = [validate_video_shape(width, height), validate_numbers(
            cls, window=window, overlap=overlap, cfg=cfg, shift=shift, boundary=boundary)]
        found = [p for p in problems if p is not True]
        found += [str(e) for e in _window_problems(window, overlap)]
        return "\n".join(found) or True

    def render(self, model, conditioning, vae, width, height, length, window, overlap, method,
               seed, steps, cfg, shift, sampler, color_match, source_video=None,
               model_low_noise=None, boundary=0.0):
        import torch

        from ..runtime.hooks import host_hooks
        from ..samplers.long_video import (check_long_video_inputs, check_source_video,
                                           plan_long_video, render_long_video)
        from .memory import plan_before_sampling

        source = check_source_video(source_video, width, height)
        plan = plan_long_video(length, window, overlap, method,
                               source_frames=0 if source is None else source.shape[0],
                               temporal_factor=model.latent_format.temporal_factor)
        check_long_video_inputs(model, conditioning, vae, plan, width, height,
                                model_low_noise=model_low_noise)
        # The memory plan of one window (context windows: the model still sees one window
        # at a time, but the whole latent is held, which is small beside the activations).
        window_latent = torch.zeros(model.latent_format.latent_shape(
            1, min(plan.window, max(plan.renders)), height, width))
        plan_before_sampling(model, {"samples": window_latent}, cfg,
                             model_low_noise=model_low_noise)
        video = render_long_video(model, conditioning, vae, width=width, height=height,
                                  length=length, window=window, overlap=overlap, method=method,
                                  seed=seed, steps=steps, cfg=cfg, shift=shift, sampler=sampler,
                                  color_match=color_match, source_video=source,
                                  model_low_noise=model_low_noise, boundary=boundary or None,
                                  hooks=host_hooks())
        return (video.images, video.segments())


@videodit_node("VideoDiTContextWindows", "VideoDiT Context Windows", "sampling")
class VideoDiTContextWindows:
    DESCRIPTION = ("Lets any sampler denoise a clip longer than the model's window: every step "
                   "runs the model on overlapping windows along time and blends their "
                   "predictions, fading each window out toward its edges. Works with every "
                   "model and sampler node (text-to-video, image-to-video, SDEdit, FlowEdit); "
                   "the input model is left as it is. A latent no longer than one window is "
                   "sampled exactly as without this node.")
    RETURN_TYPES = ("VIDEODIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with context windows, for VideoDiT Sampler.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VIDEODIT_MODEL", {
                "tooltip": "From VideoDiT Model Loader or another patch node. For Wan 2.2 A14B "
                           "put one on each expert."}),
            "window": ("INT", dict(_WINDOW)),
            "overlap": ("INT", {**_OVERLAP, "tooltip": "Frames, 4k+1, that neighbouring "
                                "windows share; their predictions are cross-faded there. More "
                                "hides seams better and costs more windows."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, window, overlap):
        found = [str(e) for e in _window_problems(window, overlap)]
        return "\n".join(found) or True

    def apply(self, model, window, overlap):
        from ..families.context_windows import ContextWindows
        from ..samplers.long_video import window_problems

        temporal = model.latent_format.temporal_factor
        found = window_problems(int(window), int(overlap), temporal_factor=temporal)
        if found:
            raise found[0]
        patch = ContextWindows(int(window), int(overlap), temporal)
        return (model.with_patch(patch),)


NODE_CLASSES: list[type] = [VideoDiTExtendVideo, VideoDiTContextWindows]
