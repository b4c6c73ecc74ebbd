"""The table of model families, and finding the family of a file.

Like ``samplers.solvers.SOLVERS``: a name -> object table that the nodes read. Wan is the
first entry; another family is added with :func:`register_family` (see docs/architecture.md),
without touching the loader node, the sampler or the conditioning nodes.
"""
from __future__ import annotations

from pathlib import Path

from ..core.placement import Placement, PlacementFactory
from ..errors import InputError
from ..model_loaders.checkpoint_file import read_header
from ..model_loaders.detect import KIND_DESCRIPTIONS, KIND_UNKNOWN, detect_kind
from ..model_loaders.wan_dit_loader import weight_files
from .base import ModelFamily, TextSpec
from .model import VideoModel
from .wan import WanFamily

FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add a family; the families registered first are asked first."""
    if not family.name:
        raise ValueError(f"{type(family).__name__} has no name")
    if family.name in FAMILIES and FAMILIES[family.name] is not family:
        raise ValueError(f"a model family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    FAMILIES.pop(name, None)


register_family(WanFamily())


def tensor_shapes(path: Path, *, input: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor of a model file (all shards of a sharded one)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(path):
        header = read_header(file, input=input)
        shapes.update({name: tuple(info.shape) for name, info in header.tensors.items()})
    return shapes


def family_for(shapes: dict[str, tuple[int, ...]], *, file_name: str, input: str) -> ModelFamily:
    """The first registered family that recognises these tensors, or an error saying what the
    file is instead."""
    for family in FAMILIES.values():
        if family.recognizes(shapes):
            return family
    known = ", ".join(f.title or f.name for f in FAMILIES.values())
    kind = detect_kind(shapes)
    if kind != KIND_UNKNOWN and kind in KIND_DESCRIPTIONS and kind != "wan_dit":
        what, node, folder = KIND_DESCRIPTIONS[kind]
        raise InputError(f"{file_name} is {what}, not a diffusion model", input=input,
                         fix=f"load it with {node} (it belongs in models/{folder}) and pick a "
                         "diffusion model file here")
    sample = ", ".join(sorted(shapes)[:6])
    raise InputError(f"{file_name} is not a diffusion model of a known family ({known}): none "
                     f"of its {len(shapes)} tensor names look like one (first names: {sample})",
                     input=input, fix="pick a diffusion model file from models/diffusion_models")


def load_model(path: str | Path, weight_dtype: str = "default", *, name: str | None = None,
               device=None, place: PlacementFactory = Placement,
               input: str = "model_name") -> VideoModel:
    """A diffusion model file -> VIDEODIT_MODEL, whatever its family.

    ``device`` is where it will compute (it decides the default compute dtype); ``place``
    wraps the network for device management (the node passes the runtime's ManagedModel).
    """
    path = Path(path)
    name = name or path.name
    family = family_for(tensor_shapes(path, input=input), file_name=name, input=input)
    if weight_dtype not in family.weight_dtype_choices:
        raise InputError(f"weight_dtype {weight_dtype!r} is not one {family.title} models can "
                         "be kept in", input="weight_dtype",
                         fix=f"pick one of {', '.join(family.weight_dtype_choices)}")
    loaded = family.load(path, weight_dtype=weight_dtype, name=name, device=device)
    placement = place(loaded.network, f"{family.title} {name}", load_device=device)
    return VideoModel.from_loaded(loaded, family, placement)


def weight_dtype_choices() -> list[str]:
    """Every family's weight dtype choices, in registration order, each once."""
    choices: list[str] = []
    for family in FAMILIES.values():
        choices += [c for c in family.weight_dtype_choices if c not in choices]
    return choices


def weight_dtype_tooltip() -> str:
    return " ".join(f.weight_dtype_tooltip for f in FAMILIES.values() if f.weight_dtype_tooltip)


def text_spec_for_encoder(encoder: str) -> TextSpec:
    """How to pad prompts from this kind of text encoder (e.g. "umt5") before any model is
    known: the longest spec of the families that read it. The sampler fits the result to the
    model's own spec (``TextSpec.fit``), so a family with a shorter one still gets its length."""
    specs = [f.text_spec for f in FAMILIES.values() if f.text_spec.encoder == encoder]
    if not specs:
        raise ValueError(f"no registered model family reads {encoder!r} text embeddings")
    return max(specs, key=lambda spec: spec.length)
