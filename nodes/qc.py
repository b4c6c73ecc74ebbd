"""Nodes of the 'qc' stage."""
from __future__ import annotations

from ._base import videodit_node


@videodit_node("VideoDiTConsistencyReport", "VideoDiT Consistency Report", "qc")
class VideoDiTConsistencyReport:
    DESCRIPTION = ("Measures flicker, colour drift and seams, motion-compensated error, texture "
                   "boiling, sharpness pumping and motion smoothness, without any model weights. "
                   "Gives an overall score, a good/warn/fail table, the worst frames and a "
                   "per-frame plot. A clip with no motion cannot pass. For an edit, connect "
                   "its source video so motion is measured on the source; for a clip rendered "
                   "in segments, connect its segments to judge each seam and the drift from "
                   "segment to segment.")
    RETURN_TYPES = ("FLOAT", "STRING", "STRING", "IMAGE")
    RETURN_NAMES = ("score", "report", "report_json", "plot")
    OUTPUT_TOOLTIPS = ("Overall score 0..1 (1 = every metric good; capped at 0.6 for a static "
                       "clip).",
                       "Markdown table: each metric, its value, verdict and thresholds, and the "
                       "worst frames.",
                       "The same as JSON (per-metric values, verdicts, details, worst frames).",
                       "Per-frame curves (luma, flicker, warp error, colour steps, motion "
                       "smoothness) with fail lines and cuts marked.")
    FUNCTION = "report"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The clip's frames (at least 2)."}),
            },
            "optional": {
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 240.0, "step": 0.5,
                                  "tooltip": "Frame rate of the clip (Wan: 16); used by the "
                                  "motion (dynamic degree) rule."}),
                "source": ("IMAGE", {"tooltip": "Optional source video of an edit (same frame "
                                     "count; any size): motion is measured on it, so edited "
                                     "content is judged along the source's motion."}),
                "segments": ("VIDEODIT_SEGMENTS", {"tooltip": "Optional segment starts of a "
                             "clip rendered in pieces (from VideoDiT Extend Video): the seam "
                             "is measured at each boundary, each segment's colour against the "
                             "first, and both count in the verdict."}),
            },
        }

    def report(self, images, fps=16.0, source=None, segments=None):
        from ..consistency.inputs import image_to_frames, matching_reference
        from ..consistency.report import consistency_report, summary_line, to_json, to_markdown
        from ..errors import InputError
        from ..runtime.devices import compute_device
        from ..runtime.hooks import host_hooks
        from ..runtime.node_previews import temp_image_previews

        frames = image_to_frames(images, input="images", min_frames=2)
        if not fps or fps <= 0:
            raise InputError(f"fps must be positive, got {fps}", input="fps",
                             fix="enter the clip's frame rate, e.g. 16 for Wan")
        src = matching_reference(source, frames, input="source")
        report, _, image = consistency_report(frames, fps=float(fps), source=src,
                                              segments=segments, device=str(compute_device()),
                                              hooks=host_hooks())
        # An output node, so it runs and shows its verdict even with no output connected:
        # ComfyUI draws the "text" on the node, the headless runner prints it.
        # The plot's title carries the score and verdict, so showing it on the node (as Preview
        # Image does) shows the verdict in the editor; "text" is what the headless runner prints.
        ui = {"text": [summary_line(report)]}
        previews = temp_image_previews(image, "videodit_consistency_report")
        if previews:
            ui["images"] = previews
        return {"ui": ui,
                "result": (float(report["score"]), to_markdown(report), to_json(report), image)}


NODE_CLASSES: list[type] = [VideoDiTConsistencyReport]
