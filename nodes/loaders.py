"""Nodes of the 'loaders' stage."""
from __future__ import annotations

from ._base import videodit_node

INPUT = "model_name"


@videodit_node("VideoDiTModelLoader", "VideoDiT Model Loader", "loaders")
class VideoDiTModelLoader:
    DESCRIPTION = ("Loads a Wan diffusion transformer from models/diffusion_models: Wan 2.1 "
                   "T2V 1.3B/14B, I2V 14B, FLF2V 14B, VACE 1.3B/14B, Wan 2.2 TI2V 5B and the A14B "
                   "high/low-noise experts (VACE-Fun A14B too). Reads ComfyUI's single files (fp16, bf16, fp8, scaled fp8), Wan's "
                   "original shards and diffusers folders (pick any shard); the variant is read "
                   "from the weights, not the file name.")
    RETURN_TYPES = ("VIDEODIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The Wan diffusion model, for VideoDiT Sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..families import registry
        from ..runtime.model_folders import list_files

        return {"required": {
            "model_name": (list_files("diffusion_models"), {
                "tooltip": "Wan diffusion model from models/diffusion_models, e.g. "
                           "wan2.1_t2v_1.3B_fp16.safetensors. For a sharded or diffusers folder "
                           "pick any one of its shards."}),
            "weight_dtype": (registry.weight_dtype_choices(), {
                "default": "default", "tooltip": registry.weight_dtype_tooltip()}),
        }}

    def load(self, model_name, weight_dtype):
        from ..families.registry import load_model
        from ..runtime import devices
        from ..runtime.memory import ManagedModel
        from ..runtime.model_folders import resolve

        path = resolve("diffusion_models", model_name, input=INPUT)
        return (load_model(path, weight_dtype, name=model_name, input=INPUT,
                           device=devices.compute_device(), place=ManagedModel),)


NODE_CLASSES: list[type] = [VideoDiTModelLoader]
