"""Nodes of the 'text' stage: load umT5, encode prompts, adopt ComfyUI's native conditioning."""
from __future__ import annotations

from ._base import videodit_node

# The text encoder these nodes load and run (the families say how its output is padded).
TEXT_ENCODER_KIND = "umt5"

# Wan's default negative prompt (wan/configs/shared_config.py, sample_neg_prompt).
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")


@videodit_node("VideoDiTTextEncoderLoader", "VideoDiT Text Encoder Loader", "loaders")
class VideoDiTTextEncoderLoader:
    DESCRIPTION = ("Loads the umT5-XXL text encoder of the Wan models with its tokenizer. Reads "
                   "ComfyUI's umt5_xxl files (fp16/bf16, fp8 and scaled fp8; the tokenizer is "
                   "inside them), Hugging Face folders (spiece.model beside the weights) and "
                   "Wan's original .pth.")
    RETURN_TYPES = ("VIDEODIT_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The umT5 encoder and its tokenizer, for VideoDiT Text Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..model_loaders.umt5_loader import DEVICE_CHOICES, DTYPE_CHOICES
        from ..runtime.model_folders import list_files

        return {"required": {
            "text_encoder_name": (list_files("text_encoders"), {
                "tooltip": "umT5 file from models/text_encoders, e.g. umt5_xxl_fp16.safetensors. "
                           "Files without a built-in tokenizer need <name>.spiece.model beside them."}),
            "dtype": (list(DTYPE_CHOICES), {
                "default": "default",
                "tooltip": "Weight precision. default: bf16 (as Wan runs it) where supported, else "
                           "fp32. fp8 files are dequantized to this precision on load."}),
            "device": (list(DEVICE_CHOICES), {
                "default": "default",
                "tooltip": "default: encode on the GPU and move the weights back to RAM right "
                           "after. cpu: keep and run umT5 on the CPU (slow, saves VRAM; repeated "
                           "prompts come from the cache either way)."}),
        }}

    def load(self, text_encoder_name, dtype, device):
        from ..model_loaders.umt5_loader import load_text_encoder
        from ..runtime.devices import compute_device
        from ..runtime.memory import for_the_call
        from ..runtime.model_folders import resolve

        # umT5-XXL is 6-11 GB: on the GPU only while it encodes, unless everything fits.
        path = resolve("text_encoders", text_encoder_name, input="text_encoder_name")
        return (load_text_encoder(path, dtype=dtype, device=device, name=text_encoder_name,
                                  compute_device=compute_device(), place=for_the_call),)


@videodit_node("VideoDiTTextEncode", "VideoDiT Text Encode", "conditioning")
class VideoDiTTextEncode:
    DESCRIPTION = ("Encodes the positive and negative prompt with umT5 into Wan conditioning "
                   "(512 tokens, zero-padded). Prompts encoded before are taken from the cache "
                   "instead of being encoded again. Prompts over 511 tokens are cut with a "
                   "warning in the console.")
    RETURN_TYPES = ("VIDEODIT_CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Positive and negative text embeddings for the VideoDiT sampler or "
                       "VideoDiT Image To Video.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("VIDEODIT_TEXT_ENCODER", {
                "tooltip": "From VideoDiT Text Encoder Loader."}),
            "positive": ("STRING", {
                "multiline": True, "default": "",
                "tooltip": "What the video should show. Any language umT5 knows."}),
            "negative": ("STRING", {
                "multiline": True, "default": WAN_NEGATIVE_PROMPT,
                "tooltip": "What to steer away from (used when cfg > 1). The default is Wan's "
                           "own negative prompt."}),
            "disk_cache": ("BOOLEAN", {
                "default": False,
                "tooltip": "Also keep encoded prompts on disk (small safetensors files in "
                           "ComfyUI's user folder, or $VIDEODIT_PROMPT_CACHE_DIR) so they survive "
                           "restarts. The in-memory cache is always on."}),
        }}

    def encode(self, text_encoder, positive, negative, disk_cache=False):
        from ..errors import InputError
        from ..families.registry import text_spec_for_encoder
        from ..model_loaders.umt5_loader import TextEncoder
        from ..runtime.prompt_cache import PROMPT_CACHE, default_disk_dir
        from ..samplers.text_conditioning import encode_conditioning

        if not isinstance(text_encoder, TextEncoder):
            raise InputError(f"expected a VideoDiT text encoder, got {type(text_encoder).__name__}",
                             input="text_encoder", fix="connect VideoDiT Text Encoder Loader")
        disk_dir = default_disk_dir() if disk_cache else None
        spec = text_spec_for_encoder(TEXT_ENCODER_KIND)
        return (encode_conditioning(text_encoder, positive, negative, text_len=spec.length,
                                    cache=PROMPT_CACHE, disk_dir=disk_dir),)


@videodit_node("VideoDiTNativeConditioning", "VideoDiT Native Conditioning", "conditioning")
class VideoDiTNativeConditioning:
    DESCRIPTION = ("Converts ComfyUI's own CONDITIONING (Load CLIP with type 'wan' + CLIP Text "
                   "Encode) into VideoDiT conditioning, so a native text setup can drive the "
                   "VideoDiT sampler. Only the text embedding is taken over.")
    RETURN_TYPES = ("VIDEODIT_CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The same prompts as VideoDiT conditioning (512 tokens, zero-padded).",)
    FUNCTION = "convert"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"positive": ("CONDITIONING", {
                "tooltip": "Positive prompt from ComfyUI's CLIP Text Encode (umT5, type wan)."})},
            "optional": {"negative": ("CONDITIONING", {
                "tooltip": "Negative prompt from CLIP Text Encode. Without it, use cfg 1."})},
        }

    def convert(self, positive, negative=None):
        from ..families.registry import text_spec_for_encoder
        from ..samplers.text_conditioning import from_native_conditioning

        spec = text_spec_for_encoder(TEXT_ENCODER_KIND)
        return (from_native_conditioning(positive, negative, text_len=spec.length),)


NODE_CLASSES: list[type] = [VideoDiTTextEncoderLoader, VideoDiTTextEncode,
                            VideoDiTNativeConditioning]
