"""CLIP vision files -> :class:`CLIPVision` (ViT-H/14 for Wan 2.1 image-to-video).

Layouts read (detected from key names):

* **transformers / ComfyUI** ``clip_vision_h.safetensors``: ``vision_model.*`` (plus
  ``visual_projection.weight``, ignored); also transformers 5's ``CLIPVisionModel`` without the
  ``vision_model.`` prefix.
* **open-clip**: ``visual.conv1``, ``visual.transformer.resblocks.N.attn.in_proj_weight`` ...
* **original Wan** ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``:
  ``visual.patch_embedding``, ``visual.transformer.N.attn.to_qkv`` ... (its XLM-RoBERTa text
  tower is ignored).

Sizes come from tensor shapes. The head count is not visible in shapes: it is read from a
``config.json`` beside the file when there is one, else taken from the known CLIP widths
(ViT-H 1280 -> 16 heads), else width/64.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.placement import Placement, PlacementFactory
from ..errors import InputError
from ..networks.clip_vision import (ACTIVATIONS, CLIPVisionConfig, CLIPVisionEncoder,
                                    CLIPVisionOutput, preprocess)
from .checkpoint_file import read_header
from .detect import KIND_CLIP_VISION, require_kind
from .loader_core import (chosen_dtype, device_or_cpu, json_object, network_from_state,
                          read_tensors)

INPUT = "clip_name"
DTYPE_CHOICES = ("default", "fp16", "bf16", "fp32")
# width -> (heads, activation) of the public CLIP vision towers.
_KNOWN_WIDTHS = {1280: (16, "gelu"), 1664: (16, "gelu"), 1024: (16, "quick_gelu"),
                 768: (12, "quick_gelu")}
_NOT_FOR_WAN = {1024: "CLIP ViT-L", 768: "CLIP ViT-B", 1664: "CLIP ViT-bigG", 1152: "SigLIP"}
_TOWER = "vision_model."


@dataclass(frozen=True)
class _VisualLayout:
    """Where a ``visual.*`` checkpoint keeps each part of the tower (transformers names are
    what the network uses)."""
    blocks: str                       # pattern of a block's names: (index, rest)
    block_renames: dict[str, str]     # rest prefix -> transformers name in the block
    qkv: str                          # prefix of the fused q/k/v projection
    class_embedding: str
    patch_embedding: str
    position_embedding: str
    pre_norm: str
    post_norm: str


_OPEN_CLIP = _VisualLayout(
    blocks=r"visual\.transformer\.resblocks\.(\d+)\.(.+)",
    block_renames={"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.",
                   "attn.out_proj.": "self_attn.out_proj.", "mlp.c_fc.": "mlp.fc1.",
                   "mlp.c_proj.": "mlp.fc2."},
    qkv="attn.in_proj_", class_embedding="visual.class_embedding",
    patch_embedding="visual.conv1.weight", position_embedding="visual.positional_embedding",
    pre_norm="visual.ln_pre", post_norm="visual.ln_post")
_WAN = _VisualLayout(
    blocks=r"visual\.transformer\.(\d+)\.(.+)",
    block_renames={"norm1.": "layer_norm1.", "norm2.": "layer_norm2.",
                   "attn.proj.": "self_attn.out_proj.", "mlp.0.": "mlp.fc1.", "mlp.2.": "mlp.fc2."},
    qkv="attn.to_qkv.", class_embedding="visual.cls_embedding",
    patch_embedding="visual.patch_embedding.weight", position_embedding="visual.pos_embedding",
    pre_norm="visual.pre_norm", post_norm="visual.post_norm")


@dataclass
class CLIPVision:
    """VIDEODIT_CLIP_VISION: the vision tower (in its placement), ready to encode ComfyUI IMAGEs."""
    model: Placement
    name: str
    dtype: torch.dtype
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> CLIPVisionConfig:
        return self.model.module.config

    @torch.no_grad()
    def encode(self, images: torch.Tensor, *, crop: str = "none") -> CLIPVisionOutput:
        with self.model.use(offload_after=True) as module:
            device = next(module.parameters()).device
            pixels = preprocess(images.to(device), self.config.image_size, crop)
            hidden = module(pixels.to(self.dtype))
        return CLIPVisionOutput(penultimate=hidden.to("cpu", torch.float32))


def load_clip_vision(path: str | Path, *, dtype: str = "default", name: str | None = None,
                     device: torch.device | None = None,
                     place: PlacementFactory = Placement) -> CLIPVision:
    """Read a CLIP vision file (its vision tower). ``device`` is where it will compute (None:
    the CPU); ``place`` wraps the network to manage where its weights live (the nodes pass the
    runtime's host-aware placement)."""
    path = Path(path)
    name = name or path.name
    device = device_or_cpu(device)
    # Wan runs CLIP in fp16 on GPUs; CPUs get fp32, where fp16 is slow and imprecise.
    torch_dtype = chosen_dtype(dtype, DTYPE_CHOICES,
                               torch.float16 if device.type == "cuda" else torch.float32)
    read_header(path, input=INPUT)
    raw = read_tensors(path, input=INPUT, dtype=torch_dtype,
                       wanted=lambda key: not key.startswith(("textual.", "text_model.")))
    state, layout = clip_vision_state_dict(raw, file_name=name)
    config = config_from_state(state, _config_json(path))
    if config.hidden_act not in ACTIVATIONS:
        raise InputError(f"{name} uses the activation {config.hidden_act!r}, which is not a CLIP "
                         "ViT activation", input=INPUT, fix="use clip_vision_h.safetensors")
    if config.hidden_size in _NOT_FOR_WAN:
        raise InputError(f"{name} is {_NOT_FOR_WAN[config.hidden_size]} (width "
                         f"{config.hidden_size}); Wan 2.1 image-to-video reads ViT-H/14 "
                         "features (width 1280)", input=INPUT,
                         fix="use clip_vision_h.safetensors (Comfy-Org/Wan_2.1_ComfyUI_repackaged)")
    module = network_from_state(
        CLIPVisionEncoder, config, state, file_name=name, fits="a CLIP vision transformer",
        input=INPUT, fix="use clip_vision_h.safetensors (Comfy-Org/Wan_2.1_ComfyUI_repackaged)")
    placement = place(module, f"CLIP vision {name}", load_device=device)
    return CLIPVision(placement, name, torch_dtype, [f"layout: {layout}"])


def clip_vision_state_dict(raw: dict[str, torch.Tensor], *, file_name: str
                           ) -> tuple[dict[str, torch.Tensor], str]:
    """Any supported layout -> ``vision_model.*`` keys (tower only)."""
    if "visual.transformer.0.attn.to_qkv.weight" in raw or "visual.patch_embedding.weight" in raw:
        return _from_visual(raw, _WAN), "original Wan (open-clip xlm-roberta ViT-H/14)"
    if "visual.conv1.weight" in raw:
        return _from_visual(raw, _OPEN_CLIP), "open-clip"
    if "embeddings.patch_embedding.weight" in raw:  # transformers 5 CLIPVisionModel
        raw = {_TOWER + k: v for k, v in raw.items()}
    if _TOWER + "embeddings.patch_embedding.weight" in raw:
        return ({k: v for k, v in raw.items() if k.startswith(_TOWER)
                 and not k.endswith("position_ids")}, "transformers / ComfyUI")
    require_kind(list(raw), KIND_CLIP_VISION, file_name=file_name, input=INPUT)
    raise InputError(f"{file_name} is a CLIP file without a vision tower", input=INPUT,
                     fix="use clip_vision_h.safetensors from models/clip_vision")


def _split_qkv(prefix: str, weight: torch.Tensor, bias: torch.Tensor | None) -> dict:
    out = {}
    for name, w in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3, dim=0), strict=True):
        out[f"{prefix}self_attn.{name}.weight"] = w
    if bias is not None:
        for name, b in zip(("q_proj", "k_proj", "v_proj"), bias.chunk(3, dim=0), strict=True):
            out[f"{prefix}self_attn.{name}.bias"] = b
    return out


def _convert_blocks(raw: dict, layout: _VisualLayout) -> dict:
    state = {}
    for key, value in raw.items():
        match = re.fullmatch(layout.blocks, key)
        if not match:
            continue
        index, rest = match.groups()
        prefix = f"{_TOWER}encoder.layers.{index}."
        if rest == f"{layout.qkv}weight":
            state.update(_split_qkv(prefix, value, raw.get(key[: -len("weight")] + "bias")))
        elif rest == f"{layout.qkv}bias":
            continue  # taken with the weight
        else:
            for old, new in layout.block_renames.items():
                if rest.startswith(old):
                    state[prefix + new + rest[len(old):]] = value
                    break
    return state


def _from_visual(raw: dict, layout: _VisualLayout) -> dict:
    state = _convert_blocks(raw, layout)
    width = raw[layout.patch_embedding].shape[0]
    # Wan keeps a batch dimension on both embeddings ([1, 1, W] and [1, N, W]); open-clip not.
    state[_TOWER + "embeddings.class_embedding"] = raw[layout.class_embedding].reshape(width)
    state[_TOWER + "embeddings.patch_embedding.weight"] = raw[layout.patch_embedding]
    state[_TOWER + "embeddings.position_embedding.weight"] = (
        raw[layout.position_embedding].reshape(-1, width))
    for old, new in ((layout.pre_norm, "pre_layrnorm"), (layout.post_norm, "post_layernorm")):
        for part in ("weight", "bias"):
            state[f"{_TOWER}{new}.{part}"] = raw[f"{old}.{part}"]
    return state


def _config_json(path: Path) -> dict:
    for candidate in (path.with_suffix(".json"), path.parent / "config.json"):
        config = json_object(candidate)
        if config is not None:
            return config.get("vision_config", config)
    return {}


def config_from_state(state: dict[str, torch.Tensor], overrides: dict) -> CLIPVisionConfig:
    patch = state[_TOWER + "embeddings.patch_embedding.weight"]
    width, patch_size = patch.shape[0], patch.shape[-1]
    positions = state[_TOWER + "embeddings.position_embedding.weight"].shape[0]
    grid = round((positions - 1) ** 0.5)
    layers = {int(m.group(1)) for k in state
              if (m := re.match(re.escape(_TOWER) + r"encoder\.layers\.(\d+)\.", k))}
    heads, activation = _KNOWN_WIDTHS.get(width, (max(1, width // 64), "gelu"))
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=state[_TOWER + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_layers=max(layers) + 1, num_heads=int(overrides.get("num_attention_heads", heads)),
        image_size=grid * patch_size, patch_size=patch_size,
        layer_norm_eps=float(overrides.get("layer_norm_eps", 1e-5)),
        hidden_act=str(overrides.get("hidden_act", activation)))
