"""LoRA files -> a neutral list of weight changes named in the original Wan layout.

The format is recognised from tensor names, never the file name. Every layout below becomes
the same :class:`WeightChange` (a target module in the original names, its factors or
difference, and alpha):

==========================  ===================================================================
layout                      tensor names (per changed layer ``X``)
==========================  ===================================================================
ComfyUI / original Wan      ``diffusion_model.blocks.0.self_attn.q.lora_A.weight`` / ``lora_B``,
                            or ``.lora_down.weight`` / ``.lora_up.weight``; optional ``X.alpha``
kohya (musubi, sd-scripts)  ``lora_unet_blocks_0_self_attn_q.lora_down.weight`` + ``.alpha``
                            (also the ``lycoris_`` prefix)
diffusers / PEFT            ``transformer.blocks.0.attn1.to_q.lora_A.weight`` (or no prefix);
                            renamed with ``wan_dit_keys.diffusers_to_original``
full differences            ``X.diff`` (a weight, norm gain or ``modulation`` table),
                            ``X.diff_b`` (a bias)
LyCORIS LoHa                ``X.hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``
                            (+ ``hada_t1`` / ``hada_t2`` Tucker cores)
LyCORIS LoKr                ``X.lokr_w1`` or ``lokr_w1_a`` x ``lokr_w1_b``; ``X.lokr_w2`` or
                            ``lokr_w2_a`` x ``lokr_w2_b`` (+ ``lokr_t2``)
==========================  ===================================================================

The change to a weight ``W`` is ``scale * delta`` with ``scale = strength * alpha / rank``
where the file stores alpha (LoKr: only when a factor is itself split in two, as LyCORIS
does), else ``strength``. ``delta`` is ``up @ down`` (LoRA), the stored difference, the
Hadamard product of two such products (LoHa) or their Kronecker product (LoKr), flattened to
``[out, everything else]`` and reshaped to the weight's shape (so a Conv3d such as
``patch_embedding`` takes a LoRA too).

Reading checks everything that can be checked without a model: the file is a LoRA (else it
says what it is), the two factors of each layer agree on the rank, and no value is NaN or
infinite. Matching against a model's weights happens where the model is known
(``families/lora.py``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.finite import all_finite, non_finite_count
from ..errors import InputError
from .checkpoint_file import SAFETENSORS_SUFFIXES, iter_tensors, read_header
from .detect import KIND_DESCRIPTIONS, KIND_LORA, KIND_UNKNOWN, detect_kind
from .loader_core import few
from .wan_dit_keys import diffusers_to_original

INPUT = "lora_name"

KIND_LORA_FACTORS = "lora"
KIND_DIFF = "diff"
KIND_LOHA = "loha"
KIND_LOKR = "lokr"

# Suffix in the file -> (kind, role). Longest suffixes first so ".lora_A.default.weight" wins
# over ".weight"-less matches.
_SUFFIXES: dict[str, tuple[str, str]] = {
    ".lora_A.default.weight": (KIND_LORA_FACTORS, "down"),
    ".lora_B.default.weight": (KIND_LORA_FACTORS, "up"),
    ".lora_A.weight": (KIND_LORA_FACTORS, "down"),
    ".lora_B.weight": (KIND_LORA_FACTORS, "up"),
    ".lora_down.weight": (KIND_LORA_FACTORS, "down"),
    ".lora_up.weight": (KIND_LORA_FACTORS, "up"),
    ".lora_mid.weight": (KIND_LORA_FACTORS, "mid"),
    ".diff_b": (KIND_DIFF, "bias"),
    ".diff": (KIND_DIFF, "weight"),
    ".hada_w1_a": (KIND_LOHA, "w1_a"), ".hada_w1_b": (KIND_LOHA, "w1_b"),
    ".hada_w2_a": (KIND_LOHA, "w2_a"), ".hada_w2_b": (KIND_LOHA, "w2_b"),
    ".hada_t1": (KIND_LOHA, "t1"), ".hada_t2": (KIND_LOHA, "t2"),
    ".lokr_w1_a": (KIND_LOKR, "w1_a"), ".lokr_w1_b": (KIND_LOKR, "w1_b"),
    ".lokr_w2_a": (KIND_LOKR, "w2_a"), ".lokr_w2_b": (KIND_LOKR, "w2_b"),
    ".lokr_w1": (KIND_LOKR, "w1"), ".lokr_w2": (KIND_LOKR, "w2"), ".lokr_t2": (KIND_LOKR, "t2"),
    ".dora_scale": ("dora", "scale"),
    ".alpha": ("alpha", "alpha"),
}
_ORDERED_SUFFIXES = sorted(_SUFFIXES, key=len, reverse=True)

# Prefixes trainers put before the network's own names (one is removed).
_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.",
             "model.", "unet.")
_FLATTENED_PREFIXES = ("lora_unet_", "lycoris_")

# The Wan DiT's changeable modules in the original names, to undo kohya's "." -> "_".
_WAN_BLOCK_MODULES = (
    "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "self_attn.norm_q",
    "self_attn.norm_k", "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o",
    "cross_attn.norm_q", "cross_attn.norm_k", "cross_attn.k_img", "cross_attn.v_img",
    "cross_attn.norm_k_img", "norm3", "ffn.0", "ffn.2", "modulation")
_WAN_GLOBAL_MODULES = (
    "patch_embedding", "text_embedding.0", "text_embedding.2", "time_embedding.0",
    "time_embedding.2", "time_projection.1", "head.head", "head.modulation", "img_emb.proj.0",
    "img_emb.proj.1", "img_emb.proj.3", "img_emb.proj.4", "img_emb.emb_pos")
_UNFLATTEN_BLOCK = {name.replace(".", "_"): name for name in _WAN_BLOCK_MODULES}
_UNFLATTEN_GLOBAL = {name.replace(".", "_"): name for name in _WAN_GLOBAL_MODULES}
_FLAT_BLOCK = re.compile(r"^blocks_(\d+)_(.+)$")
_DIFFUSERS_MARKERS = ("attn1.", "attn2.", "condition_embedder.", "proj_out", "ffn.net.",
                      "scale_shift_table")

# Widths of the released Wan models, to say what a LoRA of another width was made for.
WIDTH_NAMES = {1536: "Wan 2.1 1.3B", 3072: "Wan 2.2 5B", 5120: "Wan 14B / Wan 2.2 A14B"}
# Square (width x width) layers: their shape is the width of the model a LoRA was made for.
WIDTH_LAYERS = re.compile(r"^blocks\.\d+\.(self_attn|cross_attn)\.[qkvo]$")


def describe_width(width: int) -> str:
    name = WIDTH_NAMES.get(width)
    return f"{width}-wide ({name})" if name else f"{width}-wide"


@dataclass
class WeightChange:
    """One change to one weight: ``scale(strength) * delta()`` added to it."""
    target: str                      # module (or parameter) in the original layout
    kind: str                        # "lora" | "diff" | "loha" | "lokr"
    factors: dict[str, torch.Tensor]
    alpha: float | None
    source_keys: tuple[str, ...]     # the file's tensor names this change was built from
    bias: bool = False               # a difference to the bias (``diff_b``)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Model parameter names this change may target, most likely first."""
        if self.bias:
            return (f"{self.target}.bias",)
        return (f"{self.target}.weight", self.target)

    @property
    def rank(self) -> int | None:
        f = self.factors
        if self.kind == KIND_LORA_FACTORS:
            return f["down"].shape[0]
        if self.kind == KIND_LOHA:
            return f["w1_b"].shape[0]
        if self.kind == KIND_LOKR:  # the split factor's rank (the later one, as LyCORIS)
            if "w2_b" in f:
                return f["w2_b"].shape[0]
            if "w1_b" in f:
                return f["w1_b"].shape[0]
        return None

    def scale(self, strength: float) -> float:
        if self.kind == KIND_DIFF:
            return float(strength)
        rank = self.rank
        if self.alpha is None or rank is None:
            return float(strength)
        return float(strength) * self.alpha / rank

    def flat_shape(self) -> tuple[int, int]:
        """``(out, everything else)`` of ``delta()``, known without computing it."""
        f = self.factors
        if self.kind == KIND_LORA_FACTORS:
            return f["up"].shape[0], math.prod(f["down"].shape[1:])
        if self.kind == KIND_DIFF:
            return flat_shape(f["diff"].shape)
        if self.kind == KIND_LOHA:
            if "t1" in f:   # Tucker: w1_a [r, out], w1_b [r, in], t1 [r, r, *kernel]
                return f["w1_a"].shape[1], f["w1_b"].shape[1] * math.prod(f["t1"].shape[2:])
            return f["w1_a"].shape[0], math.prod(f["w1_b"].shape[1:])
        # LoKr: kron(w1 [a, b], w2 [c, d...]) -> [a*c, b*d...]
        a, b = (f["w1"].shape[0], math.prod(f["w1"].shape[1:])) if "w1" in f else (
            f["w1_a"].shape[0], f["w1_b"].shape[1])
        if "w2" in f:
            c, d = f["w2"].shape[0], math.prod(f["w2"].shape[1:])
        elif "t2" in f:
            c, d = f["w2_a"].shape[1], f["w2_b"].shape[1] * math.prod(f["t2"].shape[2:])
        else:
            c, d = f["w2_a"].shape[0], math.prod(f["w2_b"].shape[1:])
        return a * c, b * d

    def low_rank(self, device=None,
                 dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(up [out, r], down [r, in])`` of a plain LoRA on a linear layer, else None."""
        if self.kind != KIND_LORA_FACTORS or self.factors["down"].ndim != 2:
            return None
        return (self.factors["up"].flatten(1).to(device, dtype),
                self.factors["down"].to(device, dtype))

    def delta(self, device=None) -> torch.Tensor:
        """The unscaled change, float32, flattened to ``flat_shape()``."""
        f = {k: v.to(device, torch.float32) for k, v in self.factors.items()}
        if self.kind == KIND_LORA_FACTORS:
            delta = f["up"].flatten(1) @ f["down"].flatten(1)
        elif self.kind == KIND_DIFF:
            delta = f["diff"]
        elif self.kind == KIND_LOHA:
            delta = (_product(f["w1_a"], f["w1_b"], f.get("t1"))
                     * _product(f["w2_a"], f["w2_b"], f.get("t2")))
        else:
            w1 = f["w1"] if "w1" in f else f["w1_a"] @ f["w1_b"]
            w2 = f["w2"] if "w2" in f else _product(f["w2_a"], f["w2_b"], f.get("t2"))
            delta = torch.kron(w1.flatten(1), w2.flatten(1))
        return delta.reshape(self.flat_shape())


def _product(a: torch.Tensor, b: torch.Tensor, core: torch.Tensor | None) -> torch.Tensor:
    """``a @ b`` flattened to 2-D, or with a Tucker core: ``[out, in, *kernel]``."""
    if core is None:
        return a.flatten(1) @ b.flatten(1)
    # core [r_a, r_b, *kernel]; b [r_b, in]; a [r_a, out] -> [out, in, *kernel]
    return torch.einsum("i j ..., j r, i p -> p r ...", core, b.flatten(1), a.flatten(1))


def flat_shape(shape: Iterable[int]) -> tuple[int, int]:
    shape = tuple(shape)
    if not shape:
        return 1, 1
    return shape[0], math.prod(shape[1:])


@dataclass
class LoraFile:
    """A LoRA file read and checked: its weight changes and what else it holds."""
    name: str
    layout: str                          # "ComfyUI/original", "kohya", "diffusers/PEFT"
    changes: list[WeightChange]
    tensor_count: int                    # tensors in the file
    ignored: list[str] = field(default_factory=list)   # tensors that change nothing we know

    @property
    def width(self) -> int | None:
        """The width of the model it was made for, from its square attention layers."""
        widths = [c.flat_shape()[0] for c in self.changes if WIDTH_LAYERS.match(c.target)
                  and not c.bias]
        if not widths:
            return None
        return max(set(widths), key=widths.count)


def read_lora(path: str | Path, *, name: str | None = None, input: str = INPUT) -> LoraFile:
    """Read and check a LoRA file (safetensors only; nothing is unpickled)."""
    path = Path(path)
    name = name or path.name
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        raise InputError(f"{name} is not a .safetensors file; LoRAs are only read from "
                         "safetensors files (other formats can run code when loaded)",
                         input=input, fix="use the .safetensors release of this LoRA, or "
                         "convert it to safetensors with a trusted tool")
    header = read_header(path, input=input)
    keys = list(header.tensors)
    _refuse_non_lora(keys, name, input)

    tensors: dict[str, torch.Tensor] = {}
    for key, dtype, read in iter_tensors(path, input=input):
        tensor = read()
        if not all_finite(tensor):
            bad = non_finite_count(tensor)
            raise InputError(f"{name} holds NaN or infinite numbers in tensor {key!r} ({bad} of "
                             f"{tensor.numel()} values); applying it would turn the video black",
                             input=input, fix="download the LoRA again or use another one "
                             "(if it was converted to fp16, use its bf16 or fp32 release)")
        tensors[key] = tensor
    return parse_lora(tensors, name=name, input=input)


def parse_lora(tensors: dict[str, torch.Tensor], *, name: str = "LoRA",
               input: str = INPUT) -> LoraFile:
    """Tensors of a LoRA file (any layout above) -> :class:`LoraFile`."""
    groups: dict[str, dict[str, dict[str, tuple[str, torch.Tensor]]]] = {}
    ignored: list[str] = []
    for key, tensor in tensors.items():
        suffix = next((s for s in _ORDERED_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            ignored.append(key)
            continue
        kind, role = _SUFFIXES[suffix]
        groups.setdefault(key[: -len(suffix)], {}).setdefault(kind, {})[role] = (key, tensor)

    stems = list(groups)
    diffusers = any(marker in stem for stem in stems for marker in _DIFFUSERS_MARKERS)
    flattened = any(_strip_prefix(stem).startswith(_FLATTENED_PREFIXES) for stem in stems)
    layout = "diffusers/PEFT" if diffusers else "kohya" if flattened else "ComfyUI/original"

    changes: list[WeightChange] = []
    for stem, kinds in groups.items():
        if "dora" in kinds:
            raise InputError(f"{name} is a DoRA (it has {kinds['dora']['scale'][0]!r}), which "
                             "this pack does not apply", input=input,
                             fix="use a plain LoRA, LoHa or LoKr release of it")
        target = _original_name(stem, diffusers)
        alpha_entry = kinds.pop("alpha", {}).get("alpha")
        alpha = (float(alpha_entry[1].float().reshape(-1)[0])
                 if alpha_entry and alpha_entry[1].numel() else None)
        alpha_keys = (alpha_entry[0],) if alpha_entry else ()
        if not kinds and alpha_entry:
            ignored.append(alpha_entry[0])
            continue
        if target is None:
            ignored += [key for parts in kinds.values() for key, _ in parts.values()]
            continue
        for kind, parts in kinds.items():
            changes += _changes(name, stem, target, kind, parts, alpha, alpha_keys, input)
    return LoraFile(name, layout, changes, len(tensors), sorted(ignored))


def _refuse_non_lora(keys: list[str], name: str, input: str) -> None:
    if any(key.endswith(suffix) for key in keys for suffix in _SUFFIXES if suffix != ".alpha"):
        return
    kind = detect_kind(keys)
    if kind not in (KIND_UNKNOWN, KIND_LORA) and kind in KIND_DESCRIPTIONS:
        what, node, folder = KIND_DESCRIPTIONS[kind]
        raise InputError(f"{name} is {what}, not a LoRA", input=input,
                         fix=f"load it with {node} (it belongs in models/{folder}) and pick a "
                         "LoRA file from models/loras here")
    raise InputError(f"{name} is not a LoRA: none of its {len(keys)} tensor names end like LoRA "
                     f"weights (.lora_A/.lora_B, .lora_down/.lora_up, .diff, .hada_*, .lokr_*); "
                     f"first names: {few(keys, 4)}", input=input,
                     fix="pick a LoRA file from models/loras")


def _strip_prefix(stem: str) -> str:
    for prefix in _PREFIXES:
        if stem.startswith(prefix):
            return stem[len(prefix):]
    return stem


def _original_name(stem: str, diffusers: bool) -> str | None:
    """The module a file's stem changes, in the original Wan names (unknown ones unchanged,
    so the key report lists them; None for names the network leaves out)."""
    stem = _strip_prefix(stem)
    for prefix in _FLATTENED_PREFIXES:
        if stem.startswith(prefix):
            flat = stem[len(prefix):]
            block = _FLAT_BLOCK.match(flat)
            if block and block.group(2) in _UNFLATTEN_BLOCK:
                return f"blocks.{block.group(1)}.{_UNFLATTEN_BLOCK[block.group(2)]}"
            return _UNFLATTEN_GLOBAL.get(flat, stem)
    if not diffusers:
        return stem
    exact = diffusers_to_original(stem)           # whole-name entries (scale_shift_table)
    if exact != stem:
        return exact
    renamed = diffusers_to_original(f"{stem}.weight")
    if renamed is None:
        return None
    return renamed[: -len(".weight")] if renamed.endswith(".weight") else renamed


def _changes(name: str, stem: str, target: str, kind: str, parts: dict, alpha: float | None,
             alpha_keys: tuple[str, ...], input: str) -> list[WeightChange]:
    keys = tuple(key for key, _ in parts.values())
    factors = {role: tensor for role, (_, tensor) in parts.items()}
    damaged = dict(input=input, fix="download the LoRA again, or re-export it from the "
                   "trainer; this file is incomplete or was converted wrongly")

    def need(*roles: str) -> None:
        missing = [r for r in roles if r not in factors]
        if missing:
            raise InputError(f"{name} is damaged: layer {stem!r} has {', '.join(sorted(factors))} "
                             f"but no {', '.join(missing)}", **damaged)

    def same_rank(left: str, right: str, left_dim: int = 1) -> None:
        a, b = factors[left], factors[right]
        if a.ndim < 2 or b.ndim < 1 or a.shape[left_dim] != b.shape[0]:
            raise InputError(f"{name} is damaged: in layer {stem!r} the factor {left} "
                             f"{tuple(a.shape)} and {right} {tuple(b.shape)} disagree on the "
                             "rank", **damaged)

    if kind == KIND_DIFF:
        out = []
        for role, (key, tensor) in parts.items():
            out.append(WeightChange(target, KIND_DIFF, {"diff": tensor}, None, (key,),
                                    bias=role == "bias"))
        return out
    if kind == KIND_LORA_FACTORS:
        if "mid" in factors:
            raise InputError(f"{name} uses Tucker-decomposed LoCon layers (lora_mid in {stem!r}), "
                             "which this pack does not apply", input=input,
                             fix="use a LoRA exported without Tucker decomposition")
        need("up", "down")
        same_rank("up", "down")
    elif kind == KIND_LOHA:
        need("w1_a", "w1_b", "w2_a", "w2_b")
        if ("t1" in factors) != ("t2" in factors):
            raise InputError(f"{name} is damaged: layer {stem!r} has only one Tucker core",
                             **damaged)
        tucker = "t1" in factors
        for side in ("1", "2"):
            if tucker:
                if factors[f"t{side}"].shape[:2] != (factors[f"w{side}_a"].shape[0],
                                                     factors[f"w{side}_b"].shape[0]):
                    raise InputError(f"{name} is damaged: in layer {stem!r} the Tucker core "
                                     f"t{side} does not fit its factors", **damaged)
            else:
                same_rank(f"w{side}_a", f"w{side}_b")
        shapes = {side: _loha_side_shape(factors, side, tucker) for side in ("1", "2")}
        if shapes["1"] != shapes["2"]:
            raise InputError(f"{name} is damaged: in layer {stem!r} the two LoHa products have "
                             f"different shapes {shapes['1']} and {shapes['2']}", **damaged)
    else:  # LoKr
        if "w1" not in factors:
            need("w1_a", "w1_b")
            same_rank("w1_a", "w1_b")
        if "w2" not in factors:
            need("w2_a", "w2_b")
            if "t2" in factors:
                if factors["t2"].shape[:2] != (factors["w2_a"].shape[0], factors["w2_b"].shape[0]):
                    raise InputError(f"{name} is damaged: in layer {stem!r} the Tucker core t2 "
                                     "does not fit its factors", **damaged)
            else:
                same_rank("w2_a", "w2_b")
    return [WeightChange(target, kind, factors, alpha, keys + alpha_keys)]


def _loha_side_shape(factors: dict, side: str, tucker: bool) -> tuple[int, int]:
    a, b = factors[f"w{side}_a"], factors[f"w{side}_b"]
    if tucker:
        return a.shape[1], b.shape[1] * math.prod(factors[f"t{side}"].shape[2:])
    return a.shape[0], math.prod(b.shape[1:])
