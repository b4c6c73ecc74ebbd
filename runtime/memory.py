"""Where a model's weights live between uses, and making room before they move.

Every loaded network (DiT, VAE, text encoder, CLIP vision) is wrapped in a :class:`ManagedModel`.
``with managed.use() as module:`` puts the weights on the compute device (asking for room first)
and hands back the module. Standalone the weights stay there afterwards unless
``offload_after=True`` (the text encoder uses that so it is off the GPU while the DiT samples).
Inside ComfyUI the same calls go through ComfyUI's memory manager so our models and ComfyUI's
own share VRAM and ComfyUI can unload ours when it needs room.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from . import devices


def module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in
               list(module.parameters()) + list(module.buffers()))


class ManagedModel:
    def __init__(self, module: nn.Module, name: str, *, load_device: torch.device | None = None,
                 offload_device: torch.device | None = None):
        self.module = module
        self.name = name
        self.load_device = load_device if load_device is not None else devices.compute_device()
        self.offload_device = offload_device if offload_device is not None else devices.offload_device()

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
            devices.free_memory(self.size_bytes, self.load_device)
            self.module.to(self.load_device)

    def offload(self) -> None:
        if self.current_device() != self.offload_device:
            self.module.to(self.offload_device)
            devices.soft_empty_cache()
