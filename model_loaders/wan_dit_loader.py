"""Wan diffusion-model files -> :class:`LoadedDiT` (a :class:`WanDiT` in a ManagedModel).

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

Memory: the network is built on the meta device and each tensor is read straight from the file
into its own buffer (plain reads, no mmap), cast or dequantized one tensor at a time, then
assigned with ``load_state_dict(assign=True)``. Peak RAM is about the size of the loaded
weights, never two copies.
"""
from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError
from ..networks.wan_dit import CLIP_DIM, WanDiT, WanDiTConfig
from ..runtime import devices
from ..runtime.memory import ManagedModel
from . import quantization
from .checkpoint_file import SAFETENSORS_SUFFIXES, load_torch_file, read_header
from .detect import KIND_WAN_DIT, require_kind, strip_prefix
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
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# Block linears that may stay in fp8 (QuantizedLinear in the network).
_FP8_LINEAR = re.compile(r"^blocks\.\d+\.(self_attn\.[qkvo]|cross_attn\.([qkvo]|k_img|v_img)|"
                         r"ffn\.[02])\.weight$")
_REQUIRED = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
             "head.head.weight", "blocks.0.ffn.0.weight", "blocks.0.self_attn.q.weight")
_CONFIG_FILES = ("config.json",)
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


@dataclass
class LoadedDiT:
    """VIDEODIT_MODEL: the network (managed), what it is, and how it computes."""
    managed: ManagedModel
    config: WanDiTConfig
    variant: str
    latent_format: str           # "wan21" | "wan22"
    compute_dtype: torch.dtype
    file_name: str
    notes: list[str] = field(default_factory=list)

    @property
    def network(self) -> WanDiT:
        return self.managed.module


def load_wan_dit(path: str | Path, weight_dtype: str = "default",
                 compute_dtype: torch.dtype | None = None, *, name: str | None = None) -> LoadedDiT:
    path = Path(path)
    name = name or path.name
    if weight_dtype not in WEIGHT_DTYPE_CHOICES:
        raise InputError(f"unknown weight_dtype {weight_dtype!r}", input="weight_dtype",
                         fix=f"pick one of {', '.join(WEIGHT_DTYPE_CHOICES)}")
    files = weight_files(path)
    headers = [read_header(f, input=INPUT) for f in files]
    dtypes = {k: info.dtype for h in headers for k, info in h.tensors.items()}
    shapes = {k: info.shape for h in headers for k, info in h.tensors.items()}
    metadata = {k: v for h in headers for k, v in h.metadata.items()}

    weight_keys = [k for k in dtypes if not quantization.is_quantization_entry(k)]
    prefix, _ = strip_prefix(weight_keys)
    require_kind(weight_keys, KIND_WAN_DIT, file_name=name, input=INPUT)
    quant = quantization.inspect(dtypes, metadata)
    rename = _renamer(prefix, diffusers=is_diffusers_layout(weight_keys))
    named_shapes = {rename(k): s for k, s in shapes.items() if rename(k)}
    config = config_from_shapes(named_shapes, name, _diffusers_config(files[0].parent),
                                architecture_hints(metadata, name))

    load_device = devices.compute_device()
    stored_fp8 = quant.fp8_dtype is not None
    keep_fp8 = weight_dtype == "fp8_e4m3fn" or (weight_dtype == "default" and stored_fp8)
    if compute_dtype is None:
        compute_dtype = _compute_dtype(weight_dtype, dtypes, weight_keys, load_device)
    if keep_fp8:
        config.fp8_linears = True
        config.fp8_dtype = (quant.fp8_dtype if weight_dtype == "default" and quant.fp8_dtype
                            else torch.float8_e4m3fn)

    state = _read_state(files, rename, config, compute_dtype, metadata)
    with torch.device("meta"):
        network = WanDiT(config)
    missing, unexpected = network.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise InputError(f"{name} does not fit a Wan DiT of the detected shape ({_describe(config)}"
                         f"; missing: {_few(missing)}; unexpected: {_few(unexpected)})",
                         input=INPUT, fix="use an unmodified Wan 2.1 / 2.2 diffusion model file")
    network.eval().requires_grad_(False)
    variant = _variant(config)
    notes = [f"layout: {'diffusers' if is_diffusers_layout(weight_keys) else 'original'}",
             f"stored: {quant.describe()}"]
    managed = ManagedModel(network, f"Wan DiT {name}", load_device=load_device)
    return LoadedDiT(managed, config, variant, "wan22" if config.in_dim == 48 else "wan21",
                     compute_dtype, name, notes)


def weight_files(path: Path) -> list[Path]:
    """The chosen file, or every shard of the folder it belongs to (``*.index.json``)."""
    if path.is_dir():
        indexes = sorted(path.glob("*.index.json"))
        if indexes:
            return _shards(indexes[0], path)
        singles = sorted(p for p in path.iterdir() if p.suffix.lower() in SAFETENSORS_SUFFIXES)
        if len(singles) == 1:
            return singles
        raise InputError(f"{path} holds no weight index and {len(singles)} safetensors files",
                         input=INPUT, fix="pick the model's .safetensors file")
    if not path.is_file():
        raise InputError(f"file not found: {path}", input=INPUT,
                         fix="check the file name; the list shows what is in models/diffusion_models")
    for index in sorted(path.parent.glob("*.index.json")):
        shards = _index_shards(index)
        if path.name in shards:
            return _shards(index, path.parent)
    return [path]


def _index_shards(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    except (OSError, ValueError, AttributeError):
        return []
    return sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []


def _shards(index: Path, folder: Path) -> list[Path]:
    files = [folder / shard for shard in _index_shards(index)]
    absent = [f.name for f in files if not f.is_file()]
    if not files or absent:
        raise InputError(f"{index.name} lists shards that are missing: {_few(absent)}",
                         input=INPUT, fix=f"download all shards into {folder}")
    return files


def _diffusers_config(folder: Path) -> dict:
    for name in _CONFIG_FILES:
        candidate = folder / name
        if candidate.is_file():
            try:
                config = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            if isinstance(config, dict) and "num_attention_heads" in config:
                return config
    return {}


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
        raise InputError(f"{file_name} looks like a Wan diffusion model but lacks {_few(absent)} "
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
        image_dim=shapes["img_emb.proj.1.weight"][1] if has_clip else CLIP_DIM, clip_input=has_clip)


def _variant(config: WanDiTConfig) -> str:
    key = (config.dim, config.in_dim, config.model_type, config.has_image_input)
    return _VARIANTS.get(key, f"wan-{config.model_type}-custom")


def _describe(config: WanDiTConfig) -> str:
    return (f"{config.model_type}, width {config.dim}, {config.num_layers} layers, "
            f"{config.in_dim} input channels")


def _compute_dtype(weight_dtype: str, dtypes: dict[str, torch.dtype], weight_keys: list[str],
                   device: torch.device) -> torch.dtype:
    if weight_dtype in _DTYPES:
        return _DTYPES[weight_dtype]
    if weight_dtype == "default":
        stored = [dtypes[k] for k in weight_keys if k.endswith("ffn.0.weight")
                  or k.endswith("ffn.net.0.proj.weight")]
        if stored and stored[0] in (torch.float32, torch.float16, torch.bfloat16):
            return stored[0]
    return torch.bfloat16 if devices.supports_dtype(device, torch.bfloat16) else torch.float32


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
        for key, stored_dtype, read in _iter_tensors(file):
            key = rename(key)
            if not key:
                continue
            plain_float = (stored_dtype.is_floating_point
                           and stored_dtype not in quantization.FP8_DTYPES
                           and not quantization.is_quantization_entry(key))
            # Tensors that are converted anyway are read into a reused staging buffer, so
            # the file's copy never sits beside the converted one (peak stays ~1x).
            if plain_float and keep_fp8(key):
                raw[key], raw[key[: -len(".weight")] + ".scale_weight"] = (
                    quantization.quantize_fp8(read(staging=True), config.fp8_dtype))
            elif plain_float and stored_dtype != dtype:
                raw[key] = read(staging=True).to(dtype)
            else:
                raw[key] = read()
    state, _ = quantization.dequantize_state_dict(raw, metadata, dtype, keep_fp8=keep_fp8)
    raw.clear()
    # An fp8 file of the other fp8 kind, kept as fp8_e4m3fn: re-quantize those weights.
    for key in [k for k in state if keep_fp8(k) and state[k].dtype != config.fp8_dtype]:
        scale_key = key[: -len(".weight")] + ".scale_weight"
        weight = quantization.dequantize(state.pop(key), state.pop(scale_key), torch.float32)
        state[key], state[scale_key] = quantization.quantize_fp8(weight, config.fp8_dtype)
    return state


def _iter_tensors(file: Path):
    """(name, stored dtype, read) for each tensor of a file, in file order.

    ``read()`` returns the tensor in memory of its own (plain reads, no mmap kept alive);
    ``read(staging=True)`` returns a view of one buffer reused for every tensor of the file,
    valid until the next read: for tensors that are cast or quantized right away.
    """
    if file.suffix.lower() not in SAFETENSORS_SUFFIXES:
        for name, tensor in load_torch_file(file, input=INPUT).items():
            yield name, tensor.dtype, lambda staging=False, tensor=tensor: tensor
        return
    from .checkpoint_file import SAFETENSORS_DTYPES

    staging_buffer = torch.empty(0, dtype=torch.uint8)
    with open(file, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
        header.pop("__metadata__", None)
        base = 8 + header_len
        for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            start, end = entry["data_offsets"]
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]

            def read(staging: bool = False, start=start, end=end, dtype=dtype, entry=entry,
                     name=name) -> torch.Tensor:
                nonlocal staging_buffer
                if staging:
                    if staging_buffer.numel() < end - start:
                        staging_buffer = torch.empty(end - start, dtype=torch.uint8)
                    buffer = staging_buffer[: end - start]
                else:
                    buffer = torch.empty(end - start, dtype=torch.uint8)
                handle.seek(base + start)
                if handle.readinto(memoryview(buffer.numpy())) != end - start:
                    raise InputError(f"{file.name} ended early while reading {name}",
                                     input=INPUT, fix="download the file again")
                return buffer.view(dtype).reshape(entry["shape"])

            yield name, dtype, read


def _key_summary(keys) -> str:
    """Non-block tensor names in full, blocks counted: what a file holds, readably."""
    keys = sorted(keys)
    blocks = {k.split(".")[1] for k in keys if k.startswith("blocks.")}
    others = [k for k in keys if not k.startswith("blocks.")]
    listed = ", ".join(others[:20]) + (f" and {len(others) - 20} more" if len(others) > 20 else "")
    return f"{listed}; blocks.0-{len(blocks) - 1}" if blocks else listed


def _few(items, limit: int = 5) -> str:
    items = sorted(items)
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
