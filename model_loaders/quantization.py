"""Recognising and undoing the fp8 storage formats Wan checkpoints are shipped in.

Formats (all detected from tensor names, dtypes and the safetensors metadata):

* **plain fp8**: weights stored as ``float8_e4m3fn`` / ``float8_e5m2`` with no scale; the value
  is the fp8 number itself.
* **ComfyUI scaled fp8**: a root marker tensor ``scaled_fp8`` (its dtype says which fp8) and,
  per quantized layer, ``<layer>.scale_weight`` (float32 scalar); ``<layer>.scale_input`` may
  be present for fp8 matmuls and is not needed to compute in bf16/fp16/fp32.
  True weight = fp8 weight x scale_weight.
* **per-layer weight_scale** (newer ComfyUI quantization): ``<layer>.weight_scale`` (scalar or
  one value per output row), an optional ``<layer>.comfy_quant`` / ``input_scale`` entry, and a
  ``_quantization_metadata`` JSON entry in the file's metadata naming the per-layer formats.
  Only fp8 formats are read; packed 4-bit formats are refused with a clear message.

:func:`dequantize_state_dict` turns any of them into plain tensors of one dtype, optionally
keeping chosen fp8 weights (with their scale renamed to ``<layer>.scale_weight``) for
:class:`~..networks.quantized_linear.QuantizedLinear`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..errors import InputError

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
SCALED_FP8_MARKER = "scaled_fp8"
QUANT_METADATA_KEY = "_quantization_metadata"
# Scale names, by what they scale. Input scales only matter for fp8 x fp8 matmuls.
WEIGHT_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
UNUSED_QUANT_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
_FP8_FORMAT_NAMES = {"float8_e4m3fn", "float8_e5m2", "fp8_e4m3fn", "fp8_e5m2",
                     "float8_e4m3fn_scaled", "fp8_e4m3fn_scaled"}


@dataclass
class QuantizationInfo:
    """What a file stored, for the loader's report and variant names."""
    format: str                  # "none" | "fp8" | "scaled_fp8" | "weight_scale"
    fp8_dtype: torch.dtype | None
    quantized_layers: int

    def describe(self) -> str:
        if self.format == "none":
            return "not quantized"
        kind = {"fp8": "plain fp8", "scaled_fp8": "ComfyUI scaled fp8",
                "weight_scale": "per-layer weight_scale fp8"}[self.format]
        name = str(self.fp8_dtype).replace("torch.", "") if self.fp8_dtype else "fp8"
        return f"{kind} ({name}, {self.quantized_layers} layers)"


def inspect(dtypes: Mapping[str, torch.dtype], metadata: Mapping[str, str] | None = None
            ) -> QuantizationInfo:
    """Which fp8 format a file uses, from its tensor names and dtypes (no weights read)."""
    metadata = metadata or {}
    _refuse_unsupported_formats(metadata)
    fp8_weights = [k for k, d in dtypes.items() if d in FP8_DTYPES and k.endswith(".weight")]
    fp8_dtype = dtypes[fp8_weights[0]] if fp8_weights else None
    if any(k == SCALED_FP8_MARKER or k.endswith("." + SCALED_FP8_MARKER) for k in dtypes):
        return QuantizationInfo("scaled_fp8", fp8_dtype, len(fp8_weights))
    if any(k.endswith(".weight_scale") for k in dtypes) or QUANT_METADATA_KEY in metadata:
        return QuantizationInfo("weight_scale", fp8_dtype, len(fp8_weights))
    if fp8_weights:
        return QuantizationInfo("fp8", fp8_dtype, len(fp8_weights))
    return QuantizationInfo("none", None, 0)


def _refuse_unsupported_formats(metadata: Mapping[str, str]) -> None:
    raw = metadata.get(QUANT_METADATA_KEY)
    if not raw:
        return
    try:
        layers = json.loads(raw).get("layers", {})
    except (ValueError, AttributeError):
        return
    formats = {str(v.get("format", "")) for v in layers.values() if isinstance(v, dict)}
    unsupported = sorted(f for f in formats if f and f not in _FP8_FORMAT_NAMES)
    if unsupported:
        raise InputError(f"the file is quantized as {', '.join(unsupported)}, which this pack "
                         "does not read (only fp8 e4m3fn / e5m2, plain or scaled)",
                         input="model_name",
                         fix="use the fp16, bf16 or fp8 release of the model")


def weight_scale_key(weight_key: str, keys: Mapping[str, object]) -> str | None:
    """The scale stored for ``<layer>.weight``, in either naming, if any."""
    layer = weight_key[: -len(".weight")]
    for suffix in WEIGHT_SCALE_SUFFIXES:
        if layer + suffix in keys:
            return layer + suffix
    return None


def is_quantization_entry(key: str) -> bool:
    """Marker and scale tensors, which are not network weights."""
    return (key == SCALED_FP8_MARKER or key.endswith("." + SCALED_FP8_MARKER)
            or key.endswith(WEIGHT_SCALE_SUFFIXES) or key.endswith(UNUSED_QUANT_SUFFIXES))


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """fp8 weight x scale, in ``dtype``. Multiplying in float32 keeps the scale's precision."""
    if scale is None:
        return weight.to(dtype)
    scale = scale.to(torch.float32)
    if scale.numel() > 1:  # one scale per output row
        scale = scale.reshape(-1, *([1] * (weight.ndim - 1)))
    return (weight.to(torch.float32) * scale).to(dtype)


def quantize_fp8(weight: torch.Tensor, fp8_dtype: torch.dtype = torch.float8_e4m3fn
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A float weight as (fp8 weight, float32 per-tensor scale); amax maps to fp8's largest value."""
    largest = torch.finfo(fp8_dtype).max
    amax = weight.detach().abs().amax().to(torch.float32).clamp(min=1e-12)
    scale = amax / largest
    quantized = (weight.to(torch.float32) / scale).clamp(-largest, largest).to(fp8_dtype)
    return quantized, scale


def dequantize_state_dict(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None,
                          dtype: torch.dtype, *,
                          keep_fp8: Callable[[str], bool] | None = None
                          ) -> tuple[dict[str, torch.Tensor], QuantizationInfo]:
    """Plain ``dtype`` tensors from any supported fp8 layout.

    ``keep_fp8(weight_key)`` picks weights to keep in fp8 instead: they stay as stored with
    their scale under ``<layer>.scale_weight`` (1.0 for plain fp8), which is what
    :class:`QuantizedLinear` loads. Non-float tensors are kept as they are; markers and input
    scales are dropped. Tensors are consumed one at a time so peak memory stays near 1x.
    """
    info = inspect({k: v.dtype for k, v in state.items()}, metadata)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if is_quantization_entry(key):
            continue
        if not value.is_floating_point():
            out[key] = value
            continue
        if value.dtype in FP8_DTYPES:
            scale_key = weight_scale_key(key, state) if key.endswith(".weight") else None
            scale = state[scale_key] if scale_key else None
            if keep_fp8 is not None and keep_fp8(key):
                out[key] = value
                out[key[: -len(".weight")] + ".scale_weight"] = (
                    scale.to(torch.float32) if scale is not None
                    else torch.ones((), dtype=torch.float32))
            else:
                out[key] = dequantize(value, scale, dtype)
            continue
        out[key] = value if value.dtype == dtype else value.to(dtype)
    return out, info
