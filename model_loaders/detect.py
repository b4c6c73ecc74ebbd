"""What kind of model is this file? Decided from tensor names and shapes, never the file name.

Each loader calls :func:`require_kind` first, so a VAE given to the model loader is refused
with "this file is a VAE, load it with VideoDiT VAE Loader" instead of a wall of missing keys.
"""
from __future__ import annotations

from collections.abc import Iterable

from ..errors import InputError

# Prefixes that single-file exports put in front of a network's own keys.
KNOWN_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "module.")

KIND_WAN_DIT = "wan_dit"
KIND_WAN_VAE = "wan_vae"
KIND_UMT5 = "umt5"
KIND_CLIP_VISION = "clip_vision"
KIND_LORA = "lora"
KIND_UNKNOWN = "unknown"

KIND_DESCRIPTIONS = {
    KIND_WAN_DIT: ("a Wan diffusion model", "VideoDiT Model Loader", "diffusion_models"),
    KIND_WAN_VAE: ("a Wan VAE", "VideoDiT VAE Loader", "vae"),
    KIND_UMT5: ("a umT5 text encoder", "VideoDiT Text Encoder Loader", "text_encoders"),
    KIND_CLIP_VISION: ("a CLIP vision encoder", "VideoDiT CLIP Vision Loader", "clip_vision"),
    KIND_LORA: ("a LoRA", "VideoDiT LoRA Loader", "loras"),
}


def strip_prefix(keys: Iterable[str]) -> tuple[str, list[str]]:
    """The common known prefix of a state dict's keys (or "") and the keys without it."""
    keys = list(keys)
    for prefix in KNOWN_PREFIXES:
        if keys and sum(k.startswith(prefix) for k in keys) >= 0.9 * len(keys):
            return prefix, [k[len(prefix):] if k.startswith(prefix) else k for k in keys]
    return "", keys


def detect_kind(keys: Iterable[str]) -> str:
    _, keys = strip_prefix(keys)
    keyset = set(keys)

    def has(fragment: str) -> bool:
        return any(fragment in k for k in keyset)

    if has("lora_A") or has("lora_down") or has("lora_up") or has("lora_B") or (
            has(".hada_w1_a") or has(".lokr_w1")):
        return KIND_LORA
    if "patch_embedding.weight" in keyset and (has("self_attn.q.weight") or has("attn1.to_q")):
        return KIND_WAN_DIT
    if has("condition_embedder.") and has("attn1.to_q"):
        return KIND_WAN_DIT
    if ("encoder.conv1.weight" in keyset or "encoder.conv_in.weight" in keyset) and (
            has("decoder.")):
        return KIND_WAN_VAE
    if has("SelfAttention.relative_attention_bias") or has("pos_embedding.embedding.weight") or (
            has("encoder.block.0.layer.0.SelfAttention.q.weight")):
        return KIND_UMT5
    if (has("vision_model.embeddings") or has("visual.conv1.weight")  # ComfyUI / open-clip
            or "visual.patch_embedding.weight" in keyset                 # Wan's original .pth
            or ("embeddings.patch_embedding.weight" in keyset            # transformers 5, bare
                and has("encoder.layers."))):
        return KIND_CLIP_VISION
    return KIND_UNKNOWN


def require_kind(keys: Iterable[str], expected: str, *, file_name: str, input: str) -> None:
    """Raise a clear error when a file is not of the expected kind."""
    keys = list(keys)
    found = detect_kind(keys)
    if found == expected:
        return
    want, want_node, want_folder = KIND_DESCRIPTIONS[expected]
    if found == KIND_UNKNOWN:
        sample = ", ".join(sorted(keys)[:6])
        raise InputError(f"{file_name} is not {want}: none of its {len(keys)} tensor names "
                         f"look like one (first names: {sample})", input=input,
                         fix=f"pick {want} file from models/{want_folder}")
    what, node, folder = KIND_DESCRIPTIONS[found]
    raise InputError(f"{file_name} is {what}, not {want}", input=input,
                     fix=f"load it with {node} (it belongs in models/{folder}) and pick {want} "
                     "file here")
