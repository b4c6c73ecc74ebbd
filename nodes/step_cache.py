"""VideoDiT Step Cache: reuse the model's prediction on steps where it barely changes."""
from __future__ import annotations

from ..errors import InputError
from ._base import videodit_node

MEASURE_CHOICES = ("input change", "output magnitude")


@videodit_node("VideoDiTStepCache", "VideoDiT Step Cache", "sampling")
class VideoDiTStepCache:
    DESCRIPTION = ("Makes sampling faster by skipping the diffusion model on steps where its "
                   "prediction would barely change, reusing the last one instead. The input "
                   "model is left as it is. The first and last steps always run, the positive "
                   "and negative prompts keep separate caches, and each Wan 2.2 A14B expert "
                   "starts with an empty cache. The console shows how many model passes ran "
                   "and how many were reused. Best with 20 or more steps; with few-step "
                   "(distilled/LoRA) models there is little to skip.")
    RETURN_TYPES = ("VIDEODIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the step cache, for VideoDiT Sampler.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VIDEODIT_MODEL", {
                "tooltip": "From VideoDiT Model Loader, a LoRA loader or another patch node. "
                           "For Wan 2.2 A14B put one on each expert."}),
            "threshold": ("FLOAT", {
                "default": 0.1, "min": 0.0, "max": 2.0, "step": 0.005,
                "tooltip": "How much estimated change of the prediction may build up before "
                           "the model runs again. Higher skips more steps and changes the "
                           "result more; 0 turns the cache off."}),
            "start_percent": ("FLOAT", {
                "default": 0.2, "min": 0.0, "max": 1.0, "step": 0.01,
                "tooltip": "Fraction of the steps after which skipping is allowed (the early "
                           "steps lay out the composition)."}),
            "end_percent": ("FLOAT", {
                "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                "tooltip": "Fraction of the steps after which skipping stops again."}),
            "measure": (list(MEASURE_CHOICES), {
                "default": MEASURE_CHOICES[0],
                "tooltip": "How the change is estimated: 'input change' from how much the "
                           "latent moved (like TeaCache/EasyCache); 'output magnitude' from how "
                           "the prediction's size has been changing (like MagCache)."}),
            "max_skips": ("INT", {
                "default": 3, "min": 1, "max": 20,
                "tooltip": "At most this many steps in a row reuse the cache."}),
        }}

    def apply(self, model, threshold, start_percent, end_percent, measure, max_skips):
        from ..families.step_cache import StepCache

        if measure not in MEASURE_CHOICES:
            raise InputError(f"unknown measure {measure!r}", input="measure",
                             fix=f"pick one of {', '.join(MEASURE_CHOICES)}")
        if not 0.0 <= float(threshold):
            raise InputError(f"threshold must be 0 or more, got {threshold}", input="threshold",
                             fix="use 0 (off) to about 0.3")
        for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
            if not 0.0 <= float(value) <= 1.0:
                raise InputError(f"{name} must be between 0 and 1, got {value}", input=name,
                                 fix="give a fraction of the steps, e.g. 0.1")
        if float(start_percent) > float(end_percent):
            raise InputError(f"start_percent ({start_percent}) is after end_percent "
                             f"({end_percent})", input="end_percent",
                             fix="make end_percent at least start_percent")
        if int(max_skips) < 1:
            raise InputError(f"max_skips must be at least 1, got {max_skips}", input="max_skips",
                             fix="use 1 to 5")
        patch = StepCache(float(threshold), float(start_percent), float(end_percent), measure,
                          int(max_skips))
        return (model.with_patch(patch),)


NODE_CLASSES: list[type] = [VideoDiTStepCache]
