"""Nodes of the 'consistency' stage."""
from __future__ import annotations

from ._base import videodit_node


@videodit_node("VideoDiTFrameConsistency", "VideoDiT Frame Consistency", "consistency")
class VideoDiTFrameConsistency:
    DESCRIPTION = ("Repairs flicker, colour jumps between rendered chunks and texture shimmer "
                   "without touching clean footage. It first measures the clip and runs only the "
                   "stages it needs; nothing is smoothed across a shot cut. Connect the source "
                   "video of an edit as reference so smoothing follows the source's motion, and "
                   "the segments of a clip rendered in pieces so every boundary is repaired.")
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "summary")
    OUTPUT_TOOLTIPS = ("The repaired frames (same size and count as the input).",
                       "What was measured and which stages ran or were skipped, and why.")
    FUNCTION = "repair"

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"min": 0.0, "max": 1.0, "step": 0.05}
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The clip's frames (at least 3)."}),
                "seam_strength": ("FLOAT", {**strength, "default": 1.0, "tooltip":
                    "Colour correction of a later rendered chunk toward the earlier one at a "
                    "detected colour jump (seam). 0 turns it off."}),
                "global_deflicker": ("FLOAT", {**strength, "default": 1.0, "tooltip":
                    "Evens out whole-frame brightness/colour wobble by matching each frame's "
                    "statistics to a smoothed curve. 0 turns it off."}),
                "local_deflicker": ("FLOAT", {**strength, "default": 1.0, "tooltip":
                    "Evens out blotchy, region-wise brightness changes with a smooth gain "
                    "field from motion-aligned neighbours. 0 turns it off."}),
                "shimmer": ("FLOAT", {"min": 0.0, "max": 0.9, "step": 0.05, "default": 0.6,
                    "tooltip": "Blend factor of the motion-guided low-band smoothing that "
                    "calms boiling texture (0.3-0.6 typical). 0 turns it off."}),
                "protect_fades": ("BOOLEAN", {"default": True, "tooltip":
                    "Keep fades and slow brightness ramps at the clip's ends exactly "
                    "(point-symmetric extension). Leave on."}),
            },
            "optional": {
                "reference": ("IMAGE", {"tooltip":
                    "Optional source video (same frame count; any size) whose motion guides "
                    "the smoothing, e.g. the input of an edit."}),
                "temporal_sigma": ("FLOAT", {"default": 4.0, "min": 1.0, "max": 8.0,
                    "step": 0.5, "tooltip": "Frames over which global deflicker smooths "
                    "(2-4 typical; larger removes slower wobble but also slow real changes)."}),
                "always_run": ("BOOLEAN", {"default": False, "tooltip":
                    "Run every stage with strength > 0 even when the analysis finds nothing "
                    "to fix."}),
                "shimmer_full_band": ("BOOLEAN", {"default": False, "tooltip":
                    "Smooth fine detail too, not just the low band. Stronger on fine "
                    "boiling but softens pans; off by default."}),
                "segments": ("VIDEODIT_SEGMENTS", {"tooltip":
                    "Optional segment starts of a clip rendered in pieces (from VideoDiT "
                    "Extend Video). Each start is colour-matched to the piece before it and "
                    "smoothed across, even where no jump is detected; never treated as a "
                    "cut."}),
            },
        }

    def repair(self, images, seam_strength=1.0, global_deflicker=1.0, local_deflicker=1.0,
               shimmer=0.6, protect_fades=True, reference=None, temporal_sigma=4.0,
               always_run=False, shimmer_full_band=False, segments=None):
        from ..consistency.inputs import frames_to_image, image_to_frames, matching_reference
        from ..consistency.postpass import PostPassSettings, run_postpass
        from ..runtime.devices import compute_device
        from ..runtime.hooks import host_hooks

        frames = image_to_frames(images, input="images")
        ref = matching_reference(reference, frames, input="reference")
        settings = PostPassSettings(
            seam_strength=float(seam_strength), global_strength=float(global_deflicker),
            local_strength=float(local_deflicker), shimmer_strength=float(shimmer),
            protect_fades=bool(protect_fades), temporal_sigma=float(temporal_sigma),
            always_run=bool(always_run), shimmer_full_band=bool(shimmer_full_band),
            device=str(compute_device()))
        out, log = run_postpass(frames, ref, settings, segments=segments, hooks=host_hooks())
        return (frames_to_image(out.cpu()).to(images.dtype), log.summary())


NODE_CLASSES: list[type] = [VideoDiTFrameConsistency]
