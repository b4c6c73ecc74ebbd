"""Attention kernels the DiT can run on, and how one is picked.

Every kernel takes ``q, k, v`` as ``[batch, heads, tokens, head_dim]`` (PyTorch SDPA's layout)
and returns the same layout, with no mask and the usual ``1/sqrt(head_dim)`` scale.

* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``, on every device and dtype.
  PyTorch picks its own fastest implementation inside (on CUDA a flash or memory-efficient
  kernel).
* ``flash``: the ``flash_attn`` package (FlashAttention 2/3), CUDA only, fp16/bf16.
* ``sage``: the ``sageattention`` package, CUDA only, fp16/bf16. It quantizes q and k to int8
  for the score product, so it is a little less exact than the others; it is used only when
  asked for by name.

Neither package is a dependency: each is imported the first time it is asked for. A kernel
that cannot run here (not installed, CPU, fp32, an unsupported head size or GPU) is not an
error: :func:`choose` returns SDPA with the reason, and the caller says so once.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

BACKENDS = ("auto", "sdpa", "flash", "sage")
ENVIRONMENT_VARIABLE = "VIDEODIT_ATTENTION"

_HALF = (torch.float16, torch.bfloat16)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # flash_attn wants [batch, tokens, heads, head_dim]; transposed views are enough (it only
    # needs the last dimension contiguous).
    out = _module("flash_attn").flash_attn_func(q.transpose(1, 2), k.transpose(1, 2),
                                                  v.transpose(1, 2))
    return out.transpose(1, 2)


def _sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _module("sageattention").sageattn(q, k, v, tensor_layout="HND", is_causal=False)


@dataclass(frozen=True)
class _Kernel:
    function: Attention
    package: str | None          # the optional package it needs
    head_dims: tuple[int, ...]   # head sizes it runs (empty: any)


_KERNELS = {
    "sdpa": _Kernel(sdpa, None, ()),
    "flash": _Kernel(_flash, "flash_attn", (64, 96, 128, 160, 192, 224, 256)),
    "sage": _Kernel(_sage, "sageattention", (64, 96, 128)),
}
# What "auto" tries, in order: exact kernels only (SageAttention's int8 scores are a quality
# trade a user should choose).
_AUTO_ORDER = ("flash", "sdpa")


@dataclass(frozen=True)
class Choice:
    name: str                       # the kernel that will run
    function: Attention
    fallback_reason: str | None = None   # why the requested kernel is not the one running


def check_name(name: str, *, source: str = "attention") -> str:
    """``name`` lower-cased if it is one of :data:`BACKENDS`; a clear error otherwise."""
    normalized = str(name).strip().lower()
    if normalized not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return normalized


def choose(name: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> Choice:
    """The kernel to run for ``name`` on this device, dtype and head size (SDPA when the one
    asked for cannot run here, with the reason)."""
    name = check_name(name)
    if name == "auto":
        for candidate in _AUTO_ORDER:
            if unavailable_reason(candidate, device, dtype, head_dim) is None:
                return Choice(candidate, _KERNELS[candidate].function)
    reason = unavailable_reason(name, device, dtype, head_dim)
    if reason is None:
        return Choice(name, _KERNELS[name].function)
    return Choice("sdpa", sdpa, reason)


def unavailable_reason(name: str, device: torch.device, dtype: torch.dtype,
                       head_dim: int) -> str | None:
    """None when kernel ``name`` can run here, else why not (for the log line)."""
    kernel = _KERNELS[name]
    if kernel.package is None:
        return None
    device = torch.device(device)
    if device.type != "cuda":
        return f"{name} attention runs on CUDA GPUs only (this model runs on {device.type})"
    if dtype not in _HALF:
        return f"{name} attention needs fp16 or bf16 compute (this model computes in {dtype})"
    if kernel.head_dims and head_dim not in kernel.head_dims:
        return f"{name} attention does not support head size {head_dim}"
    if torch.cuda.get_device_capability(device) < (8, 0):
        return f"{name} attention needs an Ampere or newer GPU"
    if not _installed(kernel.package):
        return f"the {kernel.package} package is not installed"
    return None


@functools.cache
def _installed(package: str) -> bool:
    try:
        _module(package)
    except Exception:  # not installed, or built for another torch/CUDA: not usable either way
        return False
    return True


@functools.cache
def _module(package: str):
    return importlib.import_module(package)
