"""The LoRA loader: a LoRA file from models/loras as a patch on a VIDEODIT_MODEL."""
from __future__ import annotations

from ._base import videodit_node

INPUT = "lora_name"


@videodit_node("VideoDiTLoraLoader", "VideoDiT LoRA Loader", "loaders")
class VideoDiTLoraLoader:
    DESCRIPTION = ("Adds a LoRA from models/loras to a diffusion model. The input model is left "
                   "as it is (other branches keep running without the LoRA); chain several "
                   "loaders to stack LoRAs. For Wan 2.2 A14B put one loader on each expert, "
                   "each with the LoRA made for it (high-noise / low-noise). Reads ComfyUI, "
                   "kohya and diffusers/PEFT names, LoHa and LoKr; the console shows how many "
                   "of the file's tensors matched the model.")
    RETURN_TYPES = ("VIDEODIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with the LoRA, for VideoDiT Sampler or another LoRA loader.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..runtime.model_folders import list_files

        return {"required": {
            "model": ("VIDEODIT_MODEL", {
                "tooltip": "From VideoDiT Model Loader or another LoRA loader (for Wan 2.2 "
                           "A14B: the expert this LoRA was made for)."}),
            "lora_name": (list_files("loras"), {
                "tooltip": "LoRA file from models/loras (.safetensors), made for this model's "
                           "size (1.3B, 5B or 14B)."}),
            "strength": ("FLOAT", {
                "default": 1.0, "min": -10.0, "max": 10.0, "step": 0.01,
                "tooltip": "How much of the LoRA's change is added: 1 as trained, 0 none, "
                           "negative values push the other way. Multiplied by the file's "
                           "alpha / rank where it stores an alpha."}),
        }}

    def load(self, model, lora_name, strength):
        from ..families.lora import apply_lora
        from ..runtime.model_folders import resolve

        path = resolve("loras", lora_name, input=INPUT)
        return (apply_lora(model, path, strength, name=lora_name, input=INPUT),)


NODE_CLASSES: list[type] = [VideoDiTLoraLoader]
