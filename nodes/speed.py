"""Nodes that make sampling faster without changing the workflow around them."""
from __future__ import annotations

from ..errors import InputError
from ._base import videodit_node

ATTENTION_CHOICES = ("auto", "sdpa", "flash", "sage")


@videodit_node("VideoDiTSpeedOptions", "VideoDiT Speed Options", "sampling")
class VideoDiTSpeedOptions:
    DESCRIPTION = ("Picks how the diffusion model computes, for speed: the attention kernel "
                   "and optionally torch.compile of its blocks. The results stay the same up "
                   "to rounding (SageAttention rounds a little more). The input model is left "
                   "as it is. A kernel that cannot run on this machine falls back to PyTorch's "
                   "own attention with one line in the console.")
    RETURN_TYPES = ("VIDEODIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with these options, for VideoDiT Sampler or another patch "
                       "node.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VIDEODIT_MODEL", {
                "tooltip": "From VideoDiT Model Loader, a LoRA loader or another patch node. "
                           "For Wan 2.2 A14B put one on each expert."}),
            "attention": (list(ATTENTION_CHOICES), {
                "default": "auto",
                "tooltip": "auto: FlashAttention when installed and the GPU supports it, else "
                           "PyTorch SDPA (or what the VIDEODIT_ATTENTION environment variable "
                           "names). sdpa: PyTorch's scaled_dot_product_attention, works "
                           "everywhere. flash: the flash_attn package (NVIDIA Ampere or newer, "
                           "fp16/bf16). sage: the sageattention package (same GPUs; usually "
                           "faster still, computes attention scores in int8)."}),
            "compile_blocks": ("BOOLEAN", {
                "default": False,
                "tooltip": "Run each transformer block through torch.compile. The first run "
                           "compiles (a minute or more; again when the size or batch "
                           "changes), later runs are faster. Needs a working Triton (GPU) or "
                           "C++ compiler (CPU)."}),
        }}

    def apply(self, model, attention, compile_blocks):
        from ..families.speed_options import SpeedOptions

        if attention not in ATTENTION_CHOICES:
            raise InputError(f"unknown attention {attention!r}", input="attention",
                             fix=f"pick one of {', '.join(ATTENTION_CHOICES)}")
        return (model.with_patch(SpeedOptions(attention, bool(compile_blocks))),)


NODE_CLASSES: list[type] = [VideoDiTSpeedOptions]
