"""umT5 text encoder files -> :class:`TextEncoder` (network + tokenizer + identity).

Layouts read (detected from key names, never the file name):

* **ComfyUI single file** (``umt5_xxl_fp16.safetensors``, ``..._fp8_e4m3fn.safetensors``,
  ``..._fp8_e4m3fn_scaled.safetensors``): transformers key names (``shared.weight``,
  ``encoder.block.N.layer...``), with the SentencePiece model embedded as the uint8 tensor
  ``spiece_model``. A full-checkpoint prefix ``text_encoders.umt5xxl.transformer.`` is stripped.
* **Hugging Face folder** (``config.json`` + ``model.safetensors`` or shards with a
  ``*.index.json``, ``spiece.model``); a decoder and ``lm_head`` in the file are ignored.
* **Original Wan** (``models_t5_umt5-xxl-enc-bf16.pth``: ``token_embedding``,
  ``blocks.N.attn.q`` ...), read with ``torch.load(weights_only=True)``.

Where the tokenizer is looked for, in order: the embedded ``spiece_model`` tensor;
``<file name without extension>.spiece.model`` next to the file; ``spiece.model`` in the same
folder; ``tokenizer/spiece.model`` beside the folder (diffusers); ``google/umt5-xxl/spiece.model``
in the same folder (Wan's own release).

fp8 files (plain e4m3fn/e5m2, ComfyUI's scaled fp8 with ``scale_weight``, and the newer
``weight_scale``) are dequantized on load to the chosen dtype: the encoder runs once per prompt,
so there is nothing to gain from fp8 matmuls and the cache makes the cost one-off.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.placement import Placement, PlacementFactory
from ..errors import InputError
from ..networks.umt5 import UMT5Config, UMT5Encoder
from . import quantization
from .checkpoint_file import read_header
from .detect import KIND_UMT5, require_kind
from .loader_core import (bf16_if_supported, check_choice, chosen_dtype, device_or_cpu,
                          network_from_state, read_tensors, sharded_files)
from .tokenizer import UMT5Tokenizer

INPUT = "text_encoder_name"
TOKENIZER_KEY = "spiece_model"
# The first query weight marks where the encoder's own names start, whatever wraps them
# (``text_encoders.umt5xxl.transformer.`` in full checkpoints, ``umt5xxl.transformer.`` ...).
_ANCHORS = ("encoder.block.0.layer.0.SelfAttention.q.weight", "blocks.0.attn.q.weight")

DTYPE_CHOICES = ("default", "bf16", "fp16", "fp32")
DEVICE_CHOICES = ("default", "cpu")

# Wan's original module names -> transformers names (per block, then globals).
_WAN_BLOCK_RENAMES = {
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm1.weight": "layer.0.layer_norm.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_WAN_GLOBAL_RENAMES = {"token_embedding.weight": "shared.weight",
                       "norm.weight": "encoder.final_layer_norm.weight"}


@dataclass
class TextEncoder:
    """VIDEODIT_TEXT_ENCODER: the umT5 network (in its placement), its tokenizer and what
    identifies them."""
    model: Placement
    tokenizer: UMT5Tokenizer
    identity: str                     # hash of the weight files + tokenizer (prompt cache key)
    dtype: torch.dtype
    name: str
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> UMT5Config:
        return self.model.module.config

    @torch.no_grad()
    def run(self, ids: tuple[int, ...]) -> torch.Tensor:
        """Hidden states ``[len(ids), D]`` (float32, CPU) of one tokenized prompt.

        The prompt is encoded at its true length: padding keys are masked anyway, so the rows
        equal those of Wan's padded 512-token pass, at a fraction of the cost.
        """
        with self.model.use(offload_after=True) as module:
            device = next(module.parameters()).device
            input_ids = torch.tensor([ids], dtype=torch.long, device=device)
            return module(input_ids)[0].to("cpu", torch.float32)


def load_text_encoder(path: str | Path, *, dtype: str = "default", device: str = "default",
                      name: str | None = None, compute_device: torch.device | None = None,
                      place: PlacementFactory = Placement) -> TextEncoder:
    """Read a umT5 encoder file (all its shards) and find its tokenizer.

    ``device`` is the user's choice: "default" computes on ``compute_device`` (None: the CPU)
    and keeps the weights off it between prompts; "cpu" keeps and runs them on the CPU.
    ``place`` wraps the network to manage where its weights live (the nodes pass the runtime's
    host-aware placement).
    """
    path = Path(path)
    name = name or path.name
    check_choice(device, DEVICE_CHOICES, input="device")
    load_device = torch.device("cpu") if device == "cpu" else device_or_cpu(compute_device)
    # Wan runs umT5 in bf16; fall back to fp32 where bf16 matmuls are unsupported.
    torch_dtype = chosen_dtype(dtype, DTYPE_CHOICES, bf16_if_supported(load_device))

    files = sharded_files(path, input=INPUT)  # any one shard loads them all
    all_keys = [k for f in files for k in read_header(f, input=INPUT).keys()]
    _require_umt5(all_keys, name)
    prefix = _encoder_prefix(all_keys)

    def wanted(key: str) -> bool:  # skip a decoder, lm_head or the rest of a full checkpoint
        return key.split(".")[-1] == TOKENIZER_KEY or (
            key.startswith(prefix) and not key[len(prefix):].startswith(("decoder.", "lm_head.")))

    raw = {k: v for f in files
           for k, v in read_tensors(f, input=INPUT, dtype=torch_dtype, wanted=wanted).items()}
    tokenizer_key = next((k for k in raw if k.split(".")[-1] == TOKENIZER_KEY), None)
    tokenizer_bytes = raw.pop(tokenizer_key) if tokenizer_key else None
    tokenizer, tokenizer_source = _find_tokenizer(path, tokenizer_bytes)
    state, notes = umt5_state_dict(raw, torch_dtype, file_name=name)
    config = config_from_state(state, file_name=name)
    if tokenizer.vocab_size > config.vocab_size:
        raise InputError(f"the tokenizer ({tokenizer_source}) has {tokenizer.vocab_size} pieces but "
                         f"{name} has only {config.vocab_size} token embeddings", input=INPUT,
                         fix="use the umT5 spiece.model (google/umt5-xxl), not another model's")

    module = network_from_state(
        UMT5Encoder, config, state, file_name=name, fits="the umT5 encoder", input=INPUT,
        fix="use umt5_xxl_fp16.safetensors (or its fp8 variants) from "
        "Comfy-Org/Wan_2.1_ComfyUI_repackaged, or Wan's models_t5_umt5-xxl-enc-bf16.pth")
    notes.append(f"tokenizer: {tokenizer_source}")
    identity = encoder_identity(files, tokenizer.model_proto)
    if device == "cpu":  # kept where it runs: nothing to move between prompts
        placement = place(module, f"umT5 {name}", load_device=load_device,
                          offload_device=load_device)
    else:
        placement = place(module, f"umT5 {name}", load_device=load_device)
    return TextEncoder(placement, tokenizer, identity, torch_dtype, name, notes)


def _find_tokenizer(path: Path, embedded: torch.Tensor | None) -> tuple[UMT5Tokenizer, str]:
    if embedded is not None:
        proto = embedded.to(torch.uint8).numpy().tobytes()
        return UMT5Tokenizer(proto, source=f"{path.name} [{TOKENIZER_KEY}]"), f"embedded in {path.name}"
    candidates = tokenizer_candidates(path)
    for candidate in candidates:
        if candidate.is_file():
            return UMT5Tokenizer(candidate.read_bytes(), source=str(candidate)), str(candidate)
    raise InputError(f"{path.name} has no tokenizer: it holds no '{TOKENIZER_KEY}' tensor and "
                     f"no spiece.model was found (looked for {', '.join(str(c) for c in candidates)})",
                     input=INPUT,
                     fix=f"put the umT5 tokenizer (spiece.model from google/umt5-xxl) next to the "
                     f"file as {candidates[0].name}, or use ComfyUI's umt5_xxl_fp16.safetensors, "
                     "which has it built in")


def tokenizer_candidates(path: Path) -> list[Path]:
    return [path.with_name(f"{path.stem}.spiece.model"), path.parent / "spiece.model",
            path.parent.parent / "tokenizer" / "spiece.model",
            path.parent / "google" / "umt5-xxl" / "spiece.model"]


def umt5_state_dict(raw: dict[str, torch.Tensor], dtype: torch.dtype, *, file_name: str
                    ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Any supported layout -> our key names, dequantized and cast to ``dtype``."""
    notes: list[str] = []
    prefix = _encoder_prefix(raw)
    if prefix:
        raw = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    _require_umt5(raw, file_name)
    if "token_embedding.weight" in raw:
        raw = _rename_wan(raw)
        notes.append("layout: original Wan (.pth names)")
    else:
        notes.append("layout: transformers / ComfyUI")
    raw = {k: v for k, v in raw.items() if not k.startswith(("decoder.", "lm_head."))}
    if "shared.weight" not in raw and "encoder.embed_tokens.weight" in raw:
        raw["shared.weight"] = raw.pop("encoder.embed_tokens.weight")
    raw.pop("encoder.embed_tokens.weight", None)  # tied copy of shared.weight
    state, quant_note = _dequantize(raw, dtype)
    if quant_note:
        notes.append(quant_note)
    return state, notes


def _require_umt5(keys, file_name: str) -> None:
    """Refuse a VAE, DiT, CLIP ... before any weight is read ("load it with ...")."""
    keys = [k for k in keys if k.split(".")[-1] not in (TOKENIZER_KEY, "scaled_fp8")]
    prefix = _encoder_prefix(keys)
    if prefix:
        keys = [k[len(prefix):] for k in keys if k.startswith(prefix)]
    require_kind(keys, KIND_UMT5, file_name=file_name, input=INPUT)


def _encoder_prefix(keys) -> str:
    for key in keys:
        for anchor in _ANCHORS:
            if key.endswith(anchor):
                return key[: -len(anchor)]
    return ""


def _rename_wan(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in raw.items():
        match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
        if match and match.group(2) in _WAN_BLOCK_RENAMES:
            renamed[f"encoder.block.{match.group(1)}.{_WAN_BLOCK_RENAMES[match.group(2)]}"] = value
        else:
            renamed[_WAN_GLOBAL_RENAMES.get(key, key)] = value
    return renamed


def _dequantize(raw: dict[str, torch.Tensor], dtype: torch.dtype
                ) -> tuple[dict[str, torch.Tensor], str]:
    """fp8 weights (plain, scaled or weight_scale) -> ``dtype``; other tensors cast."""
    state, info = quantization.dequantize_state_dict(raw, None, dtype)
    if info.format == "none":
        return state, ""
    return state, f"weights: {info.describe()} dequantized to {dtype}"


def config_from_state(state: dict[str, torch.Tensor], *, file_name: str) -> UMT5Config:
    """Sizes read from tensor shapes; umT5 needs no config file."""
    try:
        vocab_size, d_model = state["shared.weight"].shape
        attention = "encoder.block.{}.layer.0.SelfAttention."
        inner_dim = state[attention.format(0) + "q.weight"].shape[0]
        num_buckets, num_heads = state[attention.format(0) + "relative_attention_bias.weight"].shape
        d_ff = state["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0]
    except KeyError as err:
        raise InputError(f"{file_name} lacks the umT5 tensor {err.args[0]}", input=INPUT,
                         fix="use a umT5-XXL encoder file (umt5_xxl_fp16.safetensors)") from None
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.block\.(\d+)\.", k))}
    num_layers = max(blocks) + 1
    with_bias = sum(attention.format(i) + "relative_attention_bias.weight" in state
                    for i in range(num_layers))
    if with_bias != num_layers:
        raise InputError(f"{file_name} is a T5 encoder (one shared position bias), not umT5 "
                         "(a position bias in every block); it is the text encoder of another "
                         "model family (e.g. t5xxl for Flux/SD3)", input=INPUT,
                         fix="use umt5_xxl_fp16.safetensors, the text encoder of Wan")
    return UMT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=inner_dim // num_heads,
                      d_ff=d_ff, num_layers=num_layers, num_heads=num_heads,
                      relative_attention_num_buckets=num_buckets)


def encoder_identity(files: list[Path], tokenizer_proto: bytes) -> str:
    """A cheap fingerprint of the weights: sizes, safetensors headers, first and last MiB."""
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(str(size).encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
    digest.update(hashlib.sha256(tokenizer_proto).digest())
    return digest.hexdigest()
