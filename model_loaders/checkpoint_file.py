"""Reading checkpoint files safely: safetensors headers without loading, and never pickle.

Every loader starts here. :func:`read_header` validates a safetensors file (catches truncated
and corrupt files with a clear message) and returns names, dtypes and shapes so the kind and
variant can be detected before a single weight is read; :func:`iter_tensors` then reads the
weights one tensor at a time.
"""
from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
# torch.load(weights_only=True) refuses arbitrary objects, so these cannot run code.
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}

_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]


@dataclass
class CheckpointHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    def keys(self):
        return self.tensors.keys()

    def shape(self, key: str) -> tuple[int, ...] | None:
        info = self.tensors.get(key)
        return info.shape if info is not None else None


def read_header(path: str | os.PathLike, *, input: str = "model") -> CheckpointHeader:
    """Names, dtypes and shapes of a checkpoint's tensors, read without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}", input=input,
                         fix="check the file name; the list shows what is in the models folder")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _read_safetensors_header(path, input)
    if suffix in TORCH_SUFFIXES:
        state = load_torch_file(path, input=input)
        return CheckpointHeader(path, {k: TensorInfo(v.dtype, tuple(v.shape))
                                       for k, v in state.items()})
    if suffix == ".gguf":
        raise InputError(f"{path.name} is a GGUF file, which this pack does not load yet",
                         input=input, fix="use the .safetensors release of the model "
                         "(fp16, bf16 or fp8 e4m3fn / scaled fp8)")
    raise InputError(f"{path.name}: unsupported file type {suffix!r}", input=input,
                     fix="use a .safetensors file")


def _read_safetensors_header(path: Path, input: str) -> CheckpointHeader:
    size = path.stat().st_size
    broken = f"{path.name} is not a valid safetensors file (truncated or corrupt)"
    fix = "download the file again; its size on disk does not match its header"
    if size < 8:
        raise InputError(broken, input=input, fix=fix)
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > min(_MAX_HEADER_BYTES, size - 8):
            raise InputError(broken, input=input, fix=fix)
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(broken, input=input, fix=fix) from None
    if not isinstance(header, dict):
        raise InputError(broken, input=input, fix=fix)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise InputError(f"{broken}: its __metadata__ is a {type(metadata).__name__}, not an "
                         "object of texts", input=input, fix="download the file again or "
                         "re-save it with the safetensors library")
    metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    data_bytes = size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[entry["dtype"]]
            shape = tuple(int(d) for d in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
            if min(shape, default=0) < 0 or start < 0:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{broken}: bad entry for tensor {name!r}", input=input,
                             fix=fix) from None
        if end > data_bytes or start > end:
            raise InputError(f"{broken}: tensor {name!r} ends past the end of the file "
                             f"({end} > {data_bytes} data bytes)", input=input, fix=fix)
        expected = math.prod(shape) * dtype.itemsize
        if end - start != expected:
            raise InputError(f"{broken}: tensor {name!r} has shape {list(shape)} "
                             f"({expected} bytes as {entry['dtype']}) but {end - start} bytes in "
                             "the file", input=input, fix="download the file again or re-save "
                             "it with the safetensors library")
        tensors[name] = TensorInfo(dtype, shape)
    return CheckpointHeader(path, tensors, metadata)


def load_torch_file(path: Path, *, input: str = "model") -> dict[str, torch.Tensor]:
    """Load a non-safetensors checkpoint with ``weights_only=True``: data, never code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # pickle refusals and corrupt zips both end here
        raise InputError(f"{path.name} could not be read as plain tensors ({err.__class__.__name__}:"
                         f" {str(err)[:200]})", input=input,
                         fix="use the .safetensors release of this model; files that need "
                         "arbitrary code to load are refused") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path.name} does not hold a flat dict of tensors", input=input,
                         fix="use the .safetensors release of this model")
    return state


# read(staging=False) -> the tensor; see iter_tensors
TensorReader = Callable[..., torch.Tensor]


def iter_tensors(file: Path, *, input: str = "model") -> Iterator[tuple[str, torch.dtype, TensorReader]]:
    """(name, stored dtype, read) for each tensor of a file whose header :func:`read_header`
    has validated, in file order.

    ``read()`` returns the tensor in memory of its own (plain reads, no mmap kept alive);
    ``read(staging=True)`` returns a view of one buffer reused for every tensor of the file,
    valid until the next read: for tensors that are cast or quantized right away, so the file's
    copy never sits beside the converted one.
    """
    if file.suffix.lower() not in SAFETENSORS_SUFFIXES:
        for name, tensor in load_torch_file(file, input=input).items():
            yield name, tensor.dtype, lambda staging=False, tensor=tensor: tensor
        return
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
                                     input=input, fix="download the file again")
                return buffer.view(dtype).reshape(entry["shape"])

            yield name, dtype, read
