"""Where a network's weights live between uses.

``with placement.use() as module:`` puts the weights on the compute device and hands the module
back; ``offload()`` sends them to the offload device (system RAM). This base class moves them
with ``.to()``, which is all a script or test needs. The runtime subclasses it
(``runtime/memory.py``) to go through ComfyUI's memory manager inside ComfyUI, and the nodes pass
that subclass to the loaders, so loaders never know which host they run in.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in
               list(module.parameters()) + list(module.buffers()))


def supports_dtype(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether matmuls in ``dtype`` are supported (and not emulated painfully) on ``device``."""
    if dtype == torch.float32:
        return True
    if device.type == "cuda":
        if dtype == torch.bfloat16:
            return torch.cuda.is_bf16_supported()
        return True
    if device.type == "mps":
        return dtype in (torch.float16, torch.bfloat16)
    return dtype in (torch.bfloat16, torch.float16)


class Placement:
    def __init__(self, module: nn.Module, name: str, *, load_device: torch.device | None = None,
                 offload_device: torch.device | None = None):
        self.module = module
        self.name = name
        self.load_device = torch.device(load_device) if load_device is not None else torch.device("cpu")
        self.offload_device = (torch.device(offload_device) if offload_device is not None
                               else torch.device("cpu"))

    @property
    def size_bytes(self) -> int:
        return module_bytes(self.module)

    def current_device(self) -> torch.device:
        for tensor in self.module.parameters():
            return tensor.device
        return self.offload_device

    @contextmanager
    def use(self, *, offload_after: bool = False) -> Iterator[nn.Module]:
        self.load()
        try:
            yield self.module
        finally:
            if offload_after:
                self.offload()

    def load(self) -> None:
        if self.current_device() != self.load_device:
            self.module.to(self.load_device)

    def offload(self) -> None:
        if self.current_device() != self.offload_device:
            self.module.to(self.offload_device)


# What loaders take to wrap the network they built: ``place(module, name, load_device=...)``.
PlacementFactory = Callable[..., Placement]
