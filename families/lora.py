"""A LoRA as a model patch: matched against the model's weights, merged or run beside them.

:func:`lora_patch` reads a LoRA file (``model_loaders/lora_file.py``), matches each change to
a parameter of the model's network by name and shape, reports what matched, and returns a
:class:`LoraPatch` for ``VideoModel.with_patch``. Nothing is applied until the model runs.

How a change is applied depends on how the weight is stored:

* **fp16 / bf16 / fp32 weights** are merged: ``W + scale * delta`` computed in float32 and
  cast to the weight's dtype, through the patch mechanism of ``families/model.py`` (the
  shared original is kept aside and put back exactly when a model without this LoRA runs).
* **fp8 weights** (``QuantizedLinear``) are never re-quantized: rounding ``W + scale * delta``
  back to fp8 would lose most of a small LoRA change (fp8 e4m3 keeps 3 mantissa bits, so a
  change under ~6% of a weight can vanish entirely). Instead the layer's output gets
  ``scale * up(down(x))`` added on the fly by a forward hook, registered for each velocity
  call of a sampling run and removed after it. LoHa / LoKr / full differences on fp8 layers
  have no low-rank form; their delta is built once per sampling run (compute dtype) and
  added as ``x @ delta.T``.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..model_loaders.lora_file import (INPUT, LoraFile, WeightChange, describe_width, flat_shape,
                                       read_lora)
from ..model_loaders.loader_core import few
from ..networks.quantized_linear import QuantizedLinear
from ..core.run_info import RunInfo
from .model import ModelPatch, VideoModel, Velocity, WeightUpdate

log = logging.getLogger(__name__)


@dataclass
class LoraReport:
    """What a LoRA file changes in a model: the key report logged on every load."""
    file_name: str
    layout: str
    tensors: int                      # tensors in the file
    matched_tensors: int              # of those, tensors that change a model weight
    weights: int                      # model parameters changed
    on_the_fly: int                   # of those, fp8 layers changed beside the weight
    unmatched: list[str] = field(default_factory=list)        # file tensor names
    wrong_shape: list[str] = field(default_factory=list)      # target: shapes

    def summary(self) -> str:
        text = (f"LoRA {self.file_name} ({self.layout} names): {self.matched_tensors} of "
                f"{self.tensors} tensors matched {self.weights} model weights")
        if self.on_the_fly:
            text += f" ({self.on_the_fly} fp8 layers get the change on the fly)"
        return text


@dataclass(frozen=True)
class _Matched:
    parameter: str
    module: str | None               # the fp8 layer's module path when applied on the fly
    changes: tuple[WeightChange, ...]


class LoraPatch(ModelPatch):
    """One LoRA file at one strength, matched to one model's parameter names."""

    name = "LoRA"

    def __init__(self, file_name: str, strength: float, merged: list[_Matched],
                 on_the_fly: list[_Matched]):
        self.file_name = file_name
        self.strength = float(strength)
        self._merged = tuple(merged)
        self._on_the_fly = tuple(on_the_fly)
        self.changes_weights = bool(merged)

    def describe(self) -> str:
        return f"LoRA {self.file_name} x {self.strength:g}"

    # -- merged into the weights ---------------------------------------------------------------
    def weight_updates(self, model: VideoModel) -> dict[str, WeightUpdate]:
        return {m.parameter: _merge(m.changes, self.strength) for m in self._merged}

    # -- beside fp8 weights --------------------------------------------------------------------
    def wrap_velocity(self, velocity: Velocity, model: VideoModel, run: RunInfo) -> Velocity:
        if not self._on_the_fly:
            return velocity
        network = model.network
        # Built fresh per sampling run: factors cast to the activations' device and dtype once.
        hooks = {m.module: _side_branch(m.changes, self.strength) for m in self._on_the_fly}

        def with_lora(x, sigma, inputs):
            handles = [network.get_submodule(path).register_forward_hook(hook)
                       for path, hook in hooks.items()]
            try:
                return velocity(x, sigma, inputs)
            finally:
                for handle in handles:
                    handle.remove()

        return with_lora


def _merge(changes: tuple[WeightChange, ...], strength: float) -> WeightUpdate:
    def update(weight: torch.Tensor) -> torch.Tensor:
        total = weight.float()
        for change in changes:
            total = total + change.scale(strength) * change.delta(weight.device).reshape(
                weight.shape)
        return total.to(weight.dtype)
    return update


def _side_branch(changes: tuple[WeightChange, ...], strength: float) -> Callable:
    """A forward hook adding ``sum(scale * delta) @ x`` to a linear layer's output."""
    cache: dict[tuple, list] = {}

    def prepared(device: torch.device, dtype: torch.dtype) -> list:
        key = (device, dtype)
        if key not in cache:
            terms = []
            for change in changes:
                scale = change.scale(strength)
                pair = change.low_rank(device, torch.float32)
                if pair is not None:
                    up, down = pair
                    terms.append(("low_rank", (up * scale).to(dtype), down.to(dtype)))
                else:
                    terms.append(("full", (change.delta(device) * scale).to(dtype), None))
            cache[key] = terms
        return cache[key]

    def hook(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        extra = None
        for form, first, second in prepared(x.device, x.dtype):
            if form == "low_rank":
                term = F.linear(F.linear(x, second), first)
            else:
                term = F.linear(x, first)
            extra = term if extra is None else extra + term
        return output + extra.to(output.dtype)

    return hook


def read_and_match(model: VideoModel, lora: LoraFile, strength: float, *,
                   input: str = INPUT) -> tuple[LoraPatch, LoraReport]:
    """Match a read LoRA to ``model``'s weights; refuse one made for another model."""
    network = model.network
    parameters = dict(network.named_parameters())
    modules = dict(network.named_modules())

    by_parameter: dict[str, list[WeightChange]] = {}
    unmatched: list[str] = []
    wrong_shape: list[tuple[WeightChange, str, tuple[int, ...]]] = []
    for change in lora.changes:
        parameter = next((p for p in change.parameter_names if p in parameters), None)
        if parameter is None:
            unmatched += change.source_keys
            continue
        shape = tuple(parameters[parameter].shape)
        if change.flat_shape() != flat_shape(shape):
            wrong_shape.append((change, parameter, shape))
            continue
        by_parameter.setdefault(parameter, []).append(change)
    unmatched += lora.ignored

    model_width = _model_width(parameters)
    if wrong_shape and lora.width is not None and model_width is not None \
            and lora.width != model_width:
        raise InputError(f"{lora.name} does not fit {model.file_name}: this LoRA targets a "
                         f"{describe_width(lora.width)} model; the loaded model is "
                         f"{describe_width(model_width)}", input=input,
                         fix="pick a LoRA made for this model (or connect the model it was made "
                         "for)")
    if not by_parameter:
        raise InputError(_nothing_matched(lora, model, wrong_shape, model_width), input=input,
                         fix="pick a LoRA made for this model (a Wan DiT LoRA in the "
                         "original, kohya or diffusers names)")

    merged, on_the_fly = [], []
    for parameter, changes in by_parameter.items():
        module_path = parameter.rpartition(".")[0]
        module = modules.get(module_path)
        fp8 = isinstance(module, QuantizedLinear) and parameter.endswith(".weight")
        entry = _Matched(parameter, module_path if fp8 else None, tuple(changes))
        (on_the_fly if fp8 else merged).append(entry)

    # Distinct names: one tensor (an alpha, a shared LoKr factor) may feed several changes.
    matched_tensors = len({key for cs in by_parameter.values() for c in cs
                           for key in c.source_keys})
    report = LoraReport(lora.name, lora.layout, lora.tensor_count, matched_tensors,
                        len(by_parameter), len(on_the_fly), sorted(unmatched),
                        [f"{p}: LoRA {c.flat_shape()}, model {s}" for c, p, s in wrong_shape])
    log.info(report.summary())
    if report.unmatched or report.wrong_shape:
        skipped = len(report.unmatched) + len(report.wrong_shape)
        log.warning("LoRA %s: %d of %d tensors change no weight of %s and are skipped "
                    "(first: %s)", lora.name, skipped, lora.tensor_count, model.file_name,
                    few(report.unmatched + report.wrong_shape, 5))
    return LoraPatch(lora.name, strength, merged, on_the_fly), report


def lora_patch(model: VideoModel, path: str | Path, strength: float, *, name: str | None = None,
               input: str = INPUT) -> tuple[LoraPatch, LoraReport]:
    """Read a LoRA file and match it to ``model`` (see :func:`read_and_match`)."""
    lora = read_lora(path, name=name, input=input)
    return read_and_match(model, lora, strength, input=input)


def apply_lora(model: VideoModel, path: str | Path, strength: float, *,
               name: str | None = None, input: str = INPUT) -> VideoModel:
    """``model`` with the LoRA added as a patch (the file is checked even at strength 0,
    where the model comes back unchanged)."""
    patch, _ = lora_patch(model, path, strength, name=name, input=input)
    if strength == 0:
        return model
    return model.with_patch(patch)


_SQUARE = re.compile(r"^blocks\.\d+\.self_attn\.q\.weight$")


def _model_width(parameters: dict[str, torch.Tensor]) -> int | None:
    for name, parameter in parameters.items():
        if _SQUARE.match(name):
            return parameter.shape[0]
    return None


def _nothing_matched(lora: LoraFile, model: VideoModel, wrong_shape: list,
                     model_width: int | None) -> str:
    names = [key for change in lora.changes for key in change.source_keys] + lora.ignored
    if lora.width is not None and model_width is not None and lora.width != model_width:
        return (f"none of the {lora.tensor_count} tensors of {lora.name} fit {model.file_name}: "
                f"this LoRA targets a {describe_width(lora.width)} model; the loaded model is "
                f"{describe_width(model_width)}")
    if wrong_shape:
        return (f"none of the {lora.tensor_count} tensors of {lora.name} fit the weights of "
                f"{model.file_name} (first: {wrong_shape[0][1]}: LoRA "
                f"{wrong_shape[0][0].flat_shape()}, model {wrong_shape[0][2]})")
    if names and all(n.startswith(("lora_te", "text_encoder", "te_")) for n in names):
        return f"{lora.name} changes only a text encoder, not the diffusion model"
    return (f"none of the {lora.tensor_count} tensors of {lora.name} names a weight of "
            f"{model.file_name}; it looks made for another kind of model (first names: "
            f"{few(names, 4)})")
