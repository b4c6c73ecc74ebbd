"""Wan diffusion-model files -> :class:`DiTWeights` (a :class:`WanDiT` and what it is).

Layouts (detected from tensor names, never the file name):

* **original / ComfyUI single file** (``wan2.1_t2v_1.3B_fp16.safetensors`` ...), with or
  without the ``model.diffusion_model.`` prefix of full checkpoints;
* **Wan's own release**: the same names in shards ``diffusion_pytorch_model-0000N-of-0000M``
  with a ``*.index.json``;
* **diffusers** (``WanTransformer3DModel``): one file, or a folder with ``config.json``,
  shards and an index. Picking any one shard loads the whole folder.

Variant and config come from the shapes: width from ``patch_embedding``, input channels (16
T2V, 36 I2V = noise + mask + image latent, 48 Wan 2.2 TI2V), CLIP image tokens from
``img_emb`` (+ ``emb_pos`` for FLF2V), layer count from ``blocks.N``. Heads are 128 channels
wide in every released Wan model; a diffusers ``config.json`` beside the weights overrides.

VACE models (Wan 2.1 VACE 1.3B/14B, the Wan 2.2 VACE-Fun A14B experts) add
``vace_patch_embedding`` (its input channels are the VACE context's, 96) and ``vace_blocks.N``.
The files do not say after which main blocks the VACE hints go; every released one spaces its
VACE blocks evenly from block 0 (1.3B: 15 of 30, every 2nd; 14B: 8 of 40, every 5th), which is
what is assumed, as ComfyUI does, unless a diffusers ``config.json`` lists ``vace_layers``.

Memory: the network is built on the meta device and each tensor is read straight from the file
into its own buffer (plain reads, no mmap), cast or dequantized one tensor at a time, then
assigned with ``load_state_dict(assign=True)``. Peak RAM is about the size of the loaded
weights, never two copies.

Where the weights live afterwards is the caller's business (``core/placement.py``): the
network comes back on the CPU, and ``device`` only says where it will compute, which decides
the default compute dtype.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from ..networks.wan_dit import CLIP_DIM, WanDiT, WanDiTConfig
from . import quantization
from .checkpoint_file import SAFETENSORS_SUFFIXES, iter_tensors, read_header
from .detect import KIND_WAN_DIT, detect_kind, require_kind, strip_prefix
from .loader_core import (TORCH_DTYPES, bf16_if_supported, check_choice, device_or_cpu, few,
                          check_finite_weights, is_plain_float, json_object,
                          network_from_state, shard_paths,
                          sharded_files)
from .wan_dit_keys import diffusers_to_original, is_diffusers_layout

INPUT = "model_name"
HEAD_DIM = 128

WEIGHT_DTYPE_CHOICES = ("default", "bf16", "fp16", "fp32", "fp8_e4m3fn")
WEIGHT_DTYPE_TOOLTIP = (
    "How the weights are kept in memory. default: as stored in the file (fp8 files stay fp8 and "
    "compute in bf16). bf16: 2 bytes per weight, the precision Wan was trained in (1.3B: 2.8 GB, "
    "14B: 28 GB). fp16: same size, may overflow in rare cases. fp32: 4 bytes per weight, slowest, "
    "for checking. fp8_e4m3fn: 1 byte per weight for the transformer blocks (14B: ~15 GB), "
    "widened to bf16 in each layer on the fly; slightly lower quality, a little slower.")
# Block linears that may stay in fp8 (QuantizedLinear in the network).
_BLOCK_LINEARS = r"self_attn\.[qkvo]|cross_attn\.(?:[qkvo]|k_img|v_img)|ffn\.[02]"
_FP8_LINEAR = re.compile(rf"^(?:blocks\.\d+\.(?:{_BLOCK_LINEARS})|"
                         rf"vace_blocks\.\d+\.(?:{_BLOCK_LINEARS}|before_proj|after_proj))"
                         r"\.weight$")
_REQUIRED = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
             "head.head.weight", "blocks.0.ffn.0.weight", "blocks.0.self_attn.q.weight")
# Safetensors metadata a file may carry for what its shapes cannot say: a JSON object with
# "model_type" (e.g. "ti2v" for a 16-channel model trained with first-frame conditioning, like
# the bundled demo model) and "num_heads" (Wan's heads are 128 wide; small models differ).
ARCHITECTURE_METADATA = "videodit.architecture"

# (dim, in_dim, model_type, clip) -> released variant; shapes alone cannot tell a Wan 2.1 T2V
# 14B from a Wan 2.2 A14B T2V expert (same architecture), so both read as "wan2.1-t2v-14B".
_VARIANTS = {
    (1536, 16, "t2v", False): "wan2.1-t2v-1.3B",
    (1536, 36, "i2v", True): "wan2.1-i2v-1.3B",
    (5120, 16, "t2v", False): "wan2.1-t2v-14B",
    (5120, 36, "i2v", True): "wan2.1-i2v-14B",
    (5120, 36, "flf2v", True): "wan2.1-flf2v-14B",
    (5120, 36, "i2v", False): "wan2.2-a14b-i2v",
    (3072, 48, "ti2v", False): "wan2.2-ti2v-5B",
}
# VACE models: (dim, VACE blocks) -> released variant. The Wan 2.2 VACE-Fun A14B high/low-noise
# experts have the layout of Wan 2.1 VACE 14B (as the A14B T2V experts have Wan 2.1 T2V 14B's)
# and read as "wan2.1-vace-14B".
_VACE_VARIANTS = {
    (1536, 15): "wan2.1-vace-1.3B",
    (5120, 8): "wan2.1-vace-14B",
}


@dataclass
class DiTWeights:
    """A loaded Wan DiT: the bare network on the CPU, what it is, and how it computes."""
    network: WanDiT
    config: WanDiTConfig
    variant: str
    latent_format: str           # "wan21" | "wan22"
    compute_dtype: torch.dtype
    file_name: str
    notes: list[str] = field(default_factory=list)


def looks_like_wan_dit(keys: Iterable[str]) -> bool:
    """Whether these tensor names (any known prefix, original or diffusers names, fp8 scales
    included) are those of a Wan DiT: how the model-family registry recognises a file.
    A file with only the VACE blocks is claimed too, so that loading it says what it lacks."""
    keys = _weight_keys(keys)
    return detect_kind(keys) == KIND_WAN_DIT or _vace_blocks_only(keys)


def _vace_blocks_only(keys: Iterable[str]) -> bool:
    """A "VACE module" file: the VACE blocks of a VACE model without the model itself."""
    _, keys = strip_prefix(keys)
    return (any(k.startswith("vace_blocks.") for k in keys)
            and not any(k.startswith("blocks.") for k in keys))


def load_wan_dit(path: str | Path, weight_dtype: str = "default",
                 compute_dtype: torch.dtype | None = None, *, name: str | None = None,
                 device: torch.device | None = None) -> DiTWeights:
    """Read a Wan DiT file (or sharded folder); ``device`` is where it will compute (None: the
    CPU), which decides the default compute dtype."""
    path = Path(path)
    name = name or path.name
    check_choice(weight_dtype, WEIGHT_DTYPE_CHOICES, input="weight_dtype")
    files = weight_files(path)
    headers = [read_header(f, input=INPUT) for f in files]
    dtypes = {k: info.dtype for h in headers for k, info in h.tensors.items()}
    shapes = {k: info.shape for h in headers for k, info in h.tensors.items()}
    metadata = {k: v for h in headers for k, v in h.metadata.items()}

    weight_keys = _weight_keys(dtypes)
    prefix, _ = strip_prefix(weight_keys)
    if _vace_blocks_only(weight_keys):
        raise InputError(f"{name} holds only the VACE blocks of a Wan VACE model, not a whole "
                         "model", input=INPUT, fix="load a complete Wan VACE model (such as "
                         "wan2.1_vace_14B_fp16.safetensors); VACE block files meant to be joined "
                         "to a separate text-to-video model are not supported")
    require_kind(weight_keys, KIND_WAN_DIT, file_name=name, input=INPUT)
    quant = quantization.inspect(dtypes, metadata)
    rename = _renamer(prefix, diffusers=is_diffusers_layout(weight_keys))
    named_shapes = {rename(k): s for k, s in shapes.items() if rename(k)}
    config = config_from_shapes(named_shapes, name, _diffusers_config(files[0].parent),
                                architecture_hints(metadata, name))

    stored_fp8 = quant.fp8_dtype is not None
    keep_fp8 = weight_dtype == "fp8_e4m3fn" or (weight_dtype == "default" and stored_fp8)
    if compute_dtype is None:
        compute_dtype = _compute_dtype(weight_dtype, dtypes, weight_keys, device_or_cpu(device))
    if keep_fp8:
        config.fp8_linears = True
        config.fp8_dtype = (quant.fp8_dtype if weight_dtype == "default" and quant.fp8_dtype
                            else torch.float8_e4m3fn)

    state = _read_state(files, rename, config, compute_dtype, metadata)
    network = network_from_state(WanDiT, config, state, file_name=name, fits=_describe(config),
                                 input=INPUT,
                                 fix="use an unmodified Wan 2.1 / 2.2 diffusion model file")
    notes = [f"layout: {'diffusers' if is_diffusers_layout(weight_keys) else 'original'}",
             f"stored: {quant.describe()}"]
    return DiTWeights(network, config, _variant(config),
                      "wan22" if config.in_dim == 48 else "wan21", compute_dtype, name, notes)


def _weight_keys(keys: Iterable[str]) -> list[str]:
    return [k for k in keys if not quantization.is_quantization_entry(k)]


def weight_files(path: Path) -> list[Path]:
    """The chosen file, or every shard of the folder it belongs to (``*.index.json``)."""
    if path.is_dir():
        indexes = sorted(path.glob("*.index.json"))
        if indexes:
            return shard_paths(indexes[0], path, input=INPUT)
        singles = sorted(p for p in path.iterdir() if p.suffix.lower() in SAFETENSORS_SUFFIXES)
        if len(singles) == 1:
            return singles
        raise InputError(f"{path} holds no weight index and {len(singles)} safetensors files",
                         input=INPUT, fix="pick the model's .safetensors file")
    if not path.is_file():
        raise InputError(f"file not found: {path}", input=INPUT,
                         fix="check the file name; the list shows what is in models/diffusion_models")
    return sharded_files(path, input=INPUT)


def _diffusers_config(folder: Path) -> dict:
    config = json_object(folder / "config.json")
    return config if config is not None and "num_attention_heads" in config else {}


def _renamer(prefix: str, *, diffusers: bool):
    def rename(key: str) -> str | None:
        if quantization.is_quantization_entry(key):
            # scales follow their weight's new name
            for suffix in quantization.WEIGHT_SCALE_SUFFIXES + quantization.UNUSED_QUANT_SUFFIXES:
                if key.endswith(suffix):
                    base = rename(key[: -len(suffix)] + ".weight")
                    return base[: -len(".weight")] + suffix if base else None
            return key  # the scaled_fp8 marker
        if prefix and key.startswith(prefix):
            key = key[len(prefix):]
        return diffusers_to_original(key) if diffusers else key
    return rename


def architecture_hints(metadata: dict, file_name: str) -> dict:
    """The validated ``ARCHITECTURE_METADATA`` entry of a file (``{}`` when absent)."""
    raw = metadata.get(ARCHITECTURE_METADATA)
    if raw is None:
        return {}
    fix = "re-save the file without the metadata entry, or with valid values"
    try:
        hints = json.loads(raw)
    except ValueError:
        hints = None
    if not isinstance(hints, dict) or set(hints) - {"model_type", "num_heads"}:
        raise InputError(f"{file_name}: metadata {ARCHITECTURE_METADATA} must be a JSON object "
                         f"with model_type and/or num_heads, got {raw[:80]!r}", input=INPUT, fix=fix)
    if "model_type" in hints and hints["model_type"] not in ("t2v", "ti2v"):
        raise InputError(f"{file_name}: metadata model_type {hints['model_type']!r} is not one "
                         "that tensor shapes leave open (t2v or ti2v)", input=INPUT, fix=fix)
    heads = hints.get("num_heads")
    if heads is not None and (not isinstance(heads, int) or heads < 1):
        raise InputError(f"{file_name}: metadata num_heads must be a positive integer, got "
                         f"{heads!r}", input=INPUT, fix=fix)
    return hints


def config_from_shapes(shapes: dict[str, tuple[int, ...]], file_name: str,
                       diffusers_config: dict | None = None,
                       hints: dict | None = None) -> WanDiTConfig:
    """The network's configuration from its (original-name) tensor shapes, completed by the
    file's architecture hints (see ``ARCHITECTURE_METADATA``) where shapes cannot tell."""
    hints = hints or {}
    absent = [k for k in _REQUIRED if k not in shapes]
    if absent:
        raise InputError(f"{file_name} looks like a Wan diffusion model but lacks {few(absent)} "
                         f"(it has {len(shapes)} tensors: {_key_summary(shapes)})", input=INPUT,
                         fix="use a complete Wan 2.1 / 2.2 diffusion model file (all shards)")
    dim, in_dim, *patch = shapes["patch_embedding.weight"]
    num_layers = 1 + max(int(m.group(1)) for k in shapes
                         if (m := re.match(r"blocks\.(\d+)\.", k)))
    has_clip = "img_emb.proj.1.weight" in shapes
    if "img_emb.emb_pos" in shapes:
        model_type = "flf2v"
    elif has_clip or in_dim == 36:
        model_type = "i2v"
    elif in_dim == 48:
        model_type = "ti2v"
    else:
        model_type = "t2v"
    if model_type == "t2v" and hints.get("model_type") == "ti2v":
        model_type = "ti2v"  # 16 latent channels, first-frame conditioning (the demo model)
    vace_in_dim, vace_layers = _vace_shape(shapes, num_layers, file_name, diffusers_config or {})
    heads = int((diffusers_config or {}).get("num_attention_heads") or hints.get("num_heads") or 0)
    if not heads:
        heads = max(1, dim // HEAD_DIM)
    if dim % heads:
        raise InputError(f"{file_name}: width {dim} is not divisible by {heads} attention heads",
                         input=INPUT, fix="fix the num_heads in the file's metadata")
    return WanDiTConfig(
        model_type=model_type, in_dim=in_dim,
        out_dim=shapes["head.head.weight"][0] // math.prod(patch), dim=dim,
        ffn_dim=shapes["blocks.0.ffn.0.weight"][0], num_heads=heads, num_layers=num_layers,
        text_dim=shapes["text_embedding.0.weight"][1], freq_dim=shapes["time_embedding.0.weight"][1],
        patch_size=tuple(patch), cross_attn_norm="blocks.0.norm3.weight" in shapes,
        image_dim=shapes["img_emb.proj.1.weight"][1] if has_clip else CLIP_DIM, clip_input=has_clip,
        vace_layers=vace_layers, vace_in_dim=vace_in_dim)


def _vace_shape(shapes: dict[str, tuple[int, ...]], num_layers: int, file_name: str,
                diffusers_config: dict) -> tuple[int, tuple[int, ...]]:
    """(VACE context channels, VACE layers) of a VACE model; (96, ()) for any other."""
    count = len({m.group(1) for k in shapes if (m := re.match(r"vace_blocks\.(\d+)\.", k))})
    embedding = shapes.get("vace_patch_embedding.weight")
    if not count and embedding is None:
        return 96, ()
    fix = "use a complete Wan VACE model file (all shards)"
    if not count or embedding is None:
        have, lack = (("VACE blocks", "vace_patch_embedding") if count
                      else ("vace_patch_embedding", "VACE blocks"))
        raise InputError(f"{file_name} has {have} but no {lack}", input=INPUT, fix=fix)
    listed = diffusers_config.get("vace_layers")
    if listed is not None:
        layers = tuple(int(i) for i in listed)
    elif count <= num_layers:
        layers = tuple(range(0, num_layers, num_layers // count))[:count]
    else:
        layers = ()
    if (len(layers) != count or not layers or layers[0] != 0 or layers[-1] >= num_layers
            or list(layers) != sorted(set(layers))):
        raise InputError(f"{file_name}: cannot place {count} VACE blocks among {num_layers} "
                         f"layers (config vace_layers: {listed})", input=INPUT, fix=fix)
    return embedding[1], layers


def _variant(config: WanDiTConfig) -> str:
    if config.has_vace:
        if (config.in_dim, config.model_type, config.has_image_input) != (16, "t2v", False):
            return "wan-vace-custom"
        return _VACE_VARIANTS.get((config.dim, len(config.vace_layers)), "wan-vace-custom")
    key = (config.dim, config.in_dim, config.model_type, config.has_image_input)
    return _VARIANTS.get(key, f"wan-{config.model_type}-custom")


def _describe(config: WanDiTConfig) -> str:
    vace = f" and {len(config.vace_layers)} VACE blocks" if config.has_vace else ""
    return (f"the {config.model_type} Wan DiT its shapes describe, of width {config.dim} with "
            f"{config.num_layers} layers{vace} and {config.in_dim} input channels")


def _compute_dtype(weight_dtype: str, dtypes: dict[str, torch.dtype], weight_keys: list[str],
                   device: torch.device) -> torch.dtype:
    if weight_dtype in TORCH_DTYPES:
        return TORCH_DTYPES[weight_dtype]
    if weight_dtype == "default":
        stored = [dtypes[k] for k in weight_keys if k.endswith("ffn.0.weight")
                  or k.endswith("ffn.net.0.proj.weight")]
        if stored and stored[0] in (torch.float32, torch.float16, torch.bfloat16):
            return stored[0]
    return bf16_if_supported(device)


def _read_state(files: list[Path], rename, config: WanDiTConfig, dtype: torch.dtype,
                metadata: dict) -> dict[str, torch.Tensor]:
    """Every tensor under its original name, cast / quantized / dequantized to what the network
    holds, one tensor at a time so at most one extra tensor is alive besides the result.

    Block linears of an fp8 network stay fp8 with a ``scale_weight``; float weights going there
    are quantized as they are read. fp8 tensors wait (1 byte each) until their scales are read.
    """
    def keep_fp8(key: str) -> bool:
        return config.fp8_linears and bool(_FP8_LINEAR.match(key))

    raw: dict[str, torch.Tensor] = {}
    for file in files:
        for key, stored_dtype, read in iter_tensors(file, input=INPUT):
            key = rename(key)
            if not key:
                continue
            plain_float = is_plain_float(key, stored_dtype)
            # Tensors that are converted anyway are read into a reused staging buffer, so
            # the file's copy never sits beside the converted one (peak stays ~1x).
            if plain_float and keep_fp8(key):
                stored = read(staging=True)
                check_finite_weights(stored, key, file, input=INPUT)
                raw[key], raw[key[: -len(".weight")] + ".scale_weight"] = (
                    quantization.quantize_fp8(stored, config.fp8_dtype))
                continue
            if plain_float and stored_dtype != dtype:
                raw[key] = read(staging=True).to(dtype)
            else:
                raw[key] = read()
            check_finite_weights(raw[key], key, file, input=INPUT)
    state, _ = quantization.dequantize_state_dict(raw, metadata, dtype, keep_fp8=keep_fp8)
    raw.clear()
    # An fp8 file of the other fp8 kind, kept as fp8_e4m3fn: re-quantize those weights.
    for key in [k for k in state if keep_fp8(k) and state[k].dtype != config.fp8_dtype]:
        scale_key = key[: -len(".weight")] + ".scale_weight"
        weight = quantization.dequantize(state.pop(key), state.pop(scale_key), torch.float32)
        state[key], state[scale_key] = quantization.quantize_fp8(weight, config.fp8_dtype)
    return state


def _key_summary(keys) -> str:
    """Non-block tensor names in full, blocks counted: what a file holds, readably."""
    keys = sorted(keys)
    stacks = {}
    for stack in ("blocks", "vace_blocks"):
        indices = {k.split(".")[1] for k in keys if k.startswith(stack + ".")}
        if indices:
            stacks[stack] = len(indices)
    others = [k for k in keys if k.split(".")[0] not in stacks]
    listed = ", ".join(others[:20]) + (f" and {len(others) - 20} more" if len(others) > 20 else "")
    return "; ".join([listed] + [f"{stack}.0-{n - 1}" for stack, n in stacks.items()])
