"""Where a model's weights live between uses, and making room before they move.

The nodes hand :class:`ManagedModel` to the loaders as the placement of every network they
build (DiT, VAE, text encoder, CLIP vision); it is the host-aware subclass of
:class:`..core.placement.Placement`. ``with managed.use() as module:`` puts the weights on the
compute device (asking for room first) and hands back the module. Standalone the weights stay
there afterwards unless ``offload_after=True`` (the text encoder uses that so it is off the GPU
while the DiT samples).

Inside ComfyUI the same calls go through ComfyUI's memory manager, so our models and ComfyUI's
own share VRAM: the module is registered with ``comfy.model_management`` as a
``ModelPatcher`` and loaded with ``load_models_gpu``, which first unloads whatever ComfyUI
model is in the way, and which ComfyUI can later unload again when it needs the room (the
next ``use()`` then simply loads it back). Our networks are plain PyTorch without ComfyUI's
per-layer weight casting, so they are always loaded whole (``force_full_load``); a model
ComfyUI unloaded partly is loaded whole again on its next use.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch
from torch import nn

from ..core.placement import Placement
from . import devices
from .host import comfy_module


class ComfyUIHandle(nn.Module):
    """What ComfyUI's memory manager holds for one of our modules.

    ``ModelPatcher`` keeps its bookkeeping (``device``, ``model_loaded_weight_memory``,
    ``model_lowvram``, ...) as attributes of the module it wraps; this holder takes them so the
    network itself stays untouched.
    """

    def __init__(self, module: nn.Module, name: str, device: torch.device):
        super().__init__()
        self.weights = module
        self.videodit_name = name
        self.device = device


_handle_classes: dict[str, type[ComfyUIHandle]] = {}


def _handle_for(module: nn.Module, name: str, device: torch.device) -> ComfyUIHandle:
    """A handle whose class is named after the network (ComfyUI logs "Requested to load
    VideoDiT_UMT5Encoder", "Unloading ..." with it)."""
    class_name = f"VideoDiT_{type(module).__name__}"
    if class_name not in _handle_classes:
        _handle_classes[class_name] = type(class_name, (ComfyUIHandle,), {"__module__": __name__})
    return _handle_classes[class_name](module, name, device)


# Models inside a ``use()`` block right now: loading another model must keep them loaded
# (ComfyUI evicts anything not named in the same ``load_models_gpu`` call).
_in_use: list["ManagedModel"] = []


class ManagedModel(Placement):
    def __init__(self, module: nn.Module, name: str, *, load_device: torch.device | None = None,
                 offload_device: torch.device | None = None):
        super().__init__(module, name,
                         load_device=load_device if load_device is not None
                         else devices.compute_device(),
                         offload_device=offload_device if offload_device is not None
                         else devices.offload_device())
        self._patcher = None  # ComfyUI's ModelPatcher for this module, made on first load

    @contextmanager
    def use(self, *, offload_after: bool = False) -> Iterator[nn.Module]:
        self.load()
        _in_use.append(self)
        try:
            yield self.module
        finally:
            _in_use.remove(self)
            if offload_after:
                self.offload()

    def load(self) -> None:
        mm = comfy_module("comfy.model_management")
        if mm is not None:
            self._load_through_comfyui(mm)
            return
        if self.current_device() != self.load_device:
            devices.free_memory(self.size_bytes, self.load_device)
            self.module.to(self.load_device)

    def offload(self) -> None:
        mm = comfy_module("comfy.model_management")
        if mm is not None:
            self._unload_through_comfyui(mm)
        if self.current_device() != self.offload_device:
            self.module.to(self.offload_device)
            devices.soft_empty_cache()

    @property
    def comfyui_patcher(self):
        """The ``ModelPatcher`` ComfyUI's memory manager knows this model by (None standalone)."""
        if self._patcher is None:
            patcher_module = comfy_module("comfy.model_patcher")
            if patcher_module is None:
                return None
            handle = _handle_for(self.module, self.name, self.current_device())
            self._patcher = patcher_module.ModelPatcher(
                handle, load_device=self.load_device, offload_device=self.offload_device)
        return self._patcher

    def _load_through_comfyui(self, mm: ModuleType) -> None:
        # Naming the models already in use keeps ComfyUI from evicting them to make room.
        others = [m.comfyui_patcher for m in _in_use if m is not self]
        mm.load_models_gpu(others + [self.comfyui_patcher], force_full_load=True)

    def _unload_through_comfyui(self, mm: ModuleType) -> None:
        if self._patcher is None:
            return
        loaded = mm.current_loaded_models
        for index in range(len(loaded) - 1, -1, -1):
            if loaded[index].model is self._patcher:
                loaded[index].model_unload()  # moves the weights to the offload device
                loaded.pop(index)
