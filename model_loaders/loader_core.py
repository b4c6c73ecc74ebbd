"""The steps every loader takes between a checkpoint file and a ready network.

Each loader (DiT, VAE, umT5, CLIP vision) differs in its key layouts and its dtype default;
what they share is here: the dtype widget's names and their validation, the shard list of a
sharded checkpoint, reading the wanted tensors cast as they are read, and building the network
on the meta device around those tensors with an error that names the input and the fix when
the file does not fit.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from ..core.finite import all_finite, non_finite_count
from ..core.placement import supports_dtype
from ..errors import InputError
from . import quantization
from .checkpoint_file import iter_tensors

# The dtype widget's names for plain float dtypes ("default" is each loader's own choice).
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def check_choice(choice: str, choices: Iterable[str], *, input: str) -> None:
    choices = tuple(choices)
    if choice not in choices:
        raise InputError(f"unknown {input} {choice!r}", input=input,
                         fix=f"pick one of {', '.join(choices)}")


def chosen_dtype(choice: str, choices: Iterable[str], default: torch.dtype) -> torch.dtype:
    """The torch dtype a loader's ``dtype`` input names; ``default`` is what "default" means."""
    check_choice(choice, choices, input="dtype")
    return default if choice == "default" else TORCH_DTYPES[choice]


def bf16_if_supported(device: torch.device) -> torch.dtype:
    """bf16 (what Wan's networks run in) where the device computes it, else fp32."""
    return torch.bfloat16 if supports_dtype(device, torch.bfloat16) else torch.float32


def device_or_cpu(device: torch.device | str | None) -> torch.device:
    """The compute device a loader was given; scripts and tests that give none run on the CPU."""
    return torch.device(device) if device is not None else torch.device("cpu")


def sharded_files(path: Path, *, input: str) -> list[Path]:
    """The chosen file, or every shard listed with it in a ``*.index.json`` beside it (picking
    any one shard of a sharded checkpoint loads them all)."""
    for index in sorted(path.parent.glob("*.index.json")):
        if path.name in index_shards(index):
            return shard_paths(index, path.parent, input=input)
    return [path]


def index_shards(index: Path) -> list[str]:
    """The shard file names a ``*.index.json`` maps tensors to (none when it is unreadable)."""
    weight_map = (json_object(index) or {}).get("weight_map", {})
    return sorted({str(v) for v in weight_map.values()}) if isinstance(weight_map, dict) else []


def shard_paths(index: Path, folder: Path, *, input: str) -> list[Path]:
    names = index_shards(index)
    outside = [name for name in names if not _inside(folder, name)]
    if outside:
        raise InputError(f"{index.name} names shard files outside its folder: {few(outside)}",
                         input=input, fix=f"shards must sit in {folder} and be named without "
                         "folders (no '..', '/' or absolute paths); fix or replace the index file")
    files = [folder / shard for shard in names]
    absent = [f.name for f in files if not f.is_file()]
    if not files or absent:
        raise InputError(f"{index.name} lists shards that are missing: {few(absent)}",
                         input=input, fix=f"download all shards into {folder}")
    return files


def _inside(folder: Path, name: str) -> bool:
    """A shard name is a plain file name in the index's folder (links there are followed, as
    for the chosen file itself, but '..', separators and absolute paths are refused)."""
    if not isinstance(name, str) or not name or name in (".", "..") \
            or "/" in name or "\\" in name or Path(name).is_absolute() or "\0" in name:
        return False
    return (folder / name).parent == folder


def json_object(path: Path) -> dict | None:
    """The JSON object a file beside the weights holds (a config, an index); None when it is
    absent, unreadable or not an object, so a stray file never stops a load."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_plain_float(key: str, dtype: torch.dtype) -> bool:
    """A float tensor that is not fp8 nor a quantization scale or marker: one a loader casts.
    fp8 weights wait for their scales; scales stay float32."""
    return (dtype.is_floating_point and dtype not in quantization.FP8_DTYPES
            and not quantization.is_quantization_entry(key))


def read_tensors(file: Path, *, input: str, dtype: torch.dtype | None = None,
                 wanted: Callable[[str], bool] | None = None) -> dict[str, torch.Tensor]:
    """The wanted tensors of one validated file (see ``checkpoint_file.read_header``), plain
    float ones cast to ``dtype`` as they are read, so peak memory stays about 1x the result."""
    state: dict[str, torch.Tensor] = {}
    for key, stored_dtype, read in iter_tensors(file, input=input):
        if wanted is not None and not wanted(key):
            continue
        if dtype is not None and stored_dtype != dtype and is_plain_float(key, stored_dtype):
            state[key] = read(staging=True).to(dtype)
        else:
            state[key] = read()
        check_finite_weights(state[key], key, file, input=input)
    return state


def check_finite_weights(tensor: torch.Tensor, key: str, file: Path, *, input: str) -> None:
    """Refuse a plain float tensor holding NaN or infinity (one reduction per tensor, as it is
    read): such weights only show up later as a black clip. fp8 weights are checked once
    their scales are applied, by the sampler."""
    if not tensor.dtype.is_floating_point or tensor.dtype in quantization.FP8_DTYPES:
        return
    if all_finite(tensor):
        return
    bad = non_finite_count(tensor)
    raise InputError(f"{file.name} holds NaN or infinite numbers in tensor {key!r} ({bad} of "
                     f"{tensor.numel()} values) after reading it as {tensor.dtype}".replace(
                         "torch.", ""),
                     input=input, fix="download the file again; if it was converted to fp16, "
                     "load it with weight dtype bf16 or fp32 (values too large for fp16 become "
                     "infinite), or use another release of the model")


def network_from_state(network_class: Callable[[object], nn.Module], config: object,
                       state: dict[str, torch.Tensor], *, file_name: str, fits: str, input: str,
                       fix: str) -> nn.Module:
    """``network_class(config)`` built on the meta device (no memory) that takes the tensors of
    ``state`` as its own (no copy), frozen for inference.

    A file whose names or shapes do not match is refused as "<file> does not fit <fits>".
    """
    with torch.device("meta"):
        network = network_class(config)
    expected = {**dict(network.named_parameters()), **dict(network.named_buffers())}
    for key, tensor in state.items():
        if key in expected and expected[key].dtype.is_floating_point \
                and not tensor.dtype.is_floating_point:
            raise InputError(f"{file_name} stores {key!r} as {str(tensor.dtype).replace('torch.', '')}"
                             ", but it must hold floating-point weights", input=input,
                             fix="use an unmodified release of the model (this file was "
                             "converted wrongly or is not a weights file)")
    missing, unexpected = network.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise InputError(f"{file_name} does not fit {fits} (missing: {few(missing)}; "
                         f"unexpected: {few(unexpected)})", input=input, fix=fix)
    return network.eval().requires_grad_(False)


def few(items: Iterable[str], limit: int = 5) -> str:
    """Up to ``limit`` names, sorted, and how many more: a readable part of an error."""
    items = sorted(items)
    if not items:
        return "none"
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
