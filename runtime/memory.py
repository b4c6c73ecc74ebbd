"""Where a model's weights live between uses, and making room before they move.

The nodes hand :class:`ManagedModel` to the loaders as the placement of every network they
build (DiT, VAE, text encoder, CLIP vision); it is the host-aware subclass of
:class:`..core.placement.Placement`. ``with managed.use() as module:`` puts the weights on the
compute device (asking for room first) and hands back the module. The Block Swap node hands
:class:`ManagedStreamedModel` (the host-aware :class:`..core.streamed_placement.StreamedPlacement`)
to its patch, for a network that streams the blocks that do not fit.

**Inside ComfyUI** the same calls go through ComfyUI's memory manager, so our models and
ComfyUI's own share VRAM: each is registered with ``comfy.model_management`` as a
``ModelPatcher`` and loaded with ``load_models_gpu``, which first unloads whatever is in the
way (only as much as needed) and which can later unload ours again. A whole network is plain
PyTorch without ComfyUI's per-layer weight casting, so it is always loaded whole
(``force_full_load``). A streamed network is registered with a ``ModelPatcher`` whose partial
load and unload move whole blocks (:func:`_streaming_patcher_class`): ComfyUI sees the
streamed blocks as not loaded, exactly as it sees the layers it casts on the fly in a lowvram
load, decides the weight budget itself (``--lowvram``, ``--novram``, ``--reserve-vram``
included) and can take blocks away when another model needs the room.

**Standalone** a load first unloads our other idle models, least recently used first, while
the device lacks the room; text encoders and VAEs made with ``release_after_use`` go back to
system RAM after each call unless the last memory plan showed that everything fits at once.
"""
from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import torch
from torch import nn

from ..core.placement import Placement
from ..core.streamed_placement import StreamedPlacement
from ..core.streaming import same_device
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
_in_use: list["HostManaged"] = []
# Every model placement alive, for standalone eviction and the "everything fits" question.
_known: "weakref.WeakSet[HostManaged]" = weakref.WeakSet()
_clock = itertools.count()
# Activation bytes of the last memory plan: what a step needs beside all the weights.
_last_plan_working_bytes: int | None = None


class HostManaged:
    """What our two placements share: registration with the host's memory manager, the
    claim a ``use()`` block holds, and the decision to release weights after a call."""

    release_after_use = False
    _patcher = None
    _last_used = 0

    def _register(self) -> None:
        _known.add(self)

    @contextmanager
    def use(self, *, offload_after: bool = False) -> Iterator[nn.Module]:
        self.load()
        self._last_used = next(_clock)
        _in_use.append(self)
        try:
            with self._running() as module:
                yield module
        finally:
            _in_use.remove(self)
            if (offload_after or self.release_after_use) and not self._keep_after_use():
                self.offload()

    @contextmanager
    def _running(self) -> Iterator[nn.Module]:
        yield self.module

    def _keep_after_use(self) -> bool:
        """Text encoders and VAEs stay on the device only when the plan shows that all the
        models and a step's activations fit there at once."""
        return self.release_after_use and everything_fits(self.load_device)

    @property
    def device_bytes(self) -> int:
        """Weight bytes of this network on the compute device now (counted, not assumed: a
        sibling placement of the same network may have moved them)."""
        return _bytes_on(self.module, self.load_device)

    @property
    def planned_device_bytes(self) -> int:
        """Weight bytes it holds on the device while in use."""
        raise NotImplementedError

    @property
    def comfyui_patcher(self):
        """The ``ModelPatcher`` ComfyUI's memory manager knows this model by (None standalone)."""
        if self._patcher is None:
            patcher_module = comfy_module("comfy.model_patcher")
            if patcher_module is None:
                return None
            handle = _handle_for(self.module, self.name, self.offload_device)
            self._patcher = self._make_patcher(patcher_module, handle)
        return self._patcher

    def _make_patcher(self, patcher_module: ModuleType, handle: ComfyUIHandle):
        return patcher_module.ModelPatcher(handle, load_device=self.load_device,
                                           offload_device=self.offload_device)

    def _others_in_use(self) -> list:
        return [m.comfyui_patcher for m in _in_use if m is not self]

    def _unload_through_comfyui(self, mm: ModuleType) -> None:
        if self._patcher is None:
            return
        loaded = mm.current_loaded_models
        for index in range(len(loaded) - 1, -1, -1):
            if loaded[index].model is self._patcher:
                loaded[index].model_unload()  # moves the weights to the offload device
                loaded.pop(index)

    def _make_room_standalone(self, bytes_needed: int) -> None:
        """Offload our other idle models (least recently used first) until it fits."""
        device = self.load_device
        if devices.shares_host_memory(device):
            return
        idle = sorted((m for m in list(_known) if m.module is not self.module
                       and m not in _in_use and m.load_device == device and m.device_bytes > 0),
                      key=lambda m: m._last_used)
        for model in idle:
            free = devices.free_bytes(device)
            if free is None or free - devices.reserved_bytes(device) >= bytes_needed:
                break
            model.offload()
        devices.free_memory(bytes_needed, device)


class ManagedModel(HostManaged, Placement):
    """A network loaded whole onto the compute device while in use."""

    def __init__(self, module: nn.Module, name: str, *, load_device: torch.device | None = None,
                 offload_device: torch.device | None = None, release_after_use: bool = False):
        super().__init__(module, name,
                         load_device=load_device if load_device is not None
                         else devices.compute_device(),
                         offload_device=offload_device if offload_device is not None
                         else devices.offload_device())
        self.release_after_use = release_after_use
        self._register()


    @property
    def planned_device_bytes(self) -> int:
        return self.size_bytes

    def load(self) -> None:
        mm = comfy_module("comfy.model_management")
        if mm is not None:
            # Naming the models already in use keeps ComfyUI from evicting them to make room.
            mm.load_models_gpu(self._others_in_use() + [self.comfyui_patcher],
                               force_full_load=True)
            return
        if self.current_device() != self.load_device:
            self._make_room_standalone(self.size_bytes)
            self.module.to(self.load_device)

    def offload(self) -> None:
        mm = comfy_module("comfy.model_management")
        if mm is not None:
            self._unload_through_comfyui(mm)
        if self.current_device() != self.offload_device:
            self.module.to(self.offload_device)
            devices.soft_empty_cache()


def for_the_call(module: nn.Module, name: str, **kwargs) -> ManagedModel:
    """The placement of a text encoder or VAE: on the device only for its call, unless the
    last memory plan showed that everything fits there at once."""
    return ManagedModel(module, name, release_after_use=True, **kwargs)


class ManagedStreamedModel(HostManaged, StreamedPlacement):
    """A network whose blocks that do not fit are streamed (the Block Swap node's placement)."""

    def __init__(self, module: nn.Module, name: str, blocks, *, blocks_on_device: int,
                 prefetch: int = 1, load_device: torch.device | None = None,
                 offload_device: torch.device | None = None):
        super().__init__(module, name, blocks, blocks_on_device=blocks_on_device,
                         prefetch=prefetch,
                         load_device=load_device if load_device is not None
                         else devices.compute_device(),
                         offload_device=offload_device if offload_device is not None
                         else devices.offload_device(),
                         pin_limit_bytes=devices.pin_limit_bytes())
        self._register()

    @property
    def planned_device_bytes(self) -> int:
        resident = self.base_bytes + sum(self.block_sizes[:self.resident_blocks])
        return resident + self.streaming_bytes

    @contextmanager
    def _running(self) -> Iterator[nn.Module]:
        with self.streaming():
            yield self.module

    def load(self) -> None:
        mm = comfy_module("comfy.model_management")
        if mm is not None:
            # ComfyUI decides how many weight bytes we get (partially_load below) after making
            # room for the activations and the streaming copies beside them.
            mm.load_models_gpu(self._others_in_use() + [self.comfyui_patcher],
                               memory_required=self.activation_bytes + self.streaming_bytes,
                               force_full_load=False)
            self._place()  # a model ComfyUI unloaded partly between calls is placed again
            return
        self.resident_cap = None
        missing = self.planned_device_bytes + self.activation_bytes - self.device_bytes
        if self.loaded_bytes < self.planned_device_bytes - self.streaming_bytes:
            self._make_room_standalone(missing)
        self._place()

    def offload(self) -> None:
        mm = comfy_module("comfy.model_management")
        if mm is not None:
            self._unload_through_comfyui(mm)
        self._unplace()
        devices.soft_empty_cache()

    def _make_patcher(self, patcher_module: ModuleType, handle: ComfyUIHandle):
        handle.videodit_placement = self
        return _streaming_patcher_class(patcher_module.ModelPatcher)(
            handle, load_device=self.load_device, offload_device=self.offload_device)


_streaming_patchers: dict[type, type] = {}


def _streaming_patcher_class(base: type) -> type:
    """A ``ModelPatcher`` for a streamed network: ComfyUI's partial load and unload move whole
    blocks, and the numbers it reads (``loaded_size``, ``model_lowvram``, ``device``) are the
    placement's."""
    if base in _streaming_patchers:
        return _streaming_patchers[base]

    class VideoDiTStreamingPatcher(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._report()

        @property
        def videodit_placement(self) -> StreamedPlacement:
            return self.model.videodit_placement

        def partially_load(self, device_to, extra_memory=0, force_patch_weights=False):
            placement = self.videodit_placement
            before = placement.loaded_bytes
            placement.fit(before + extra_memory)
            self._report()
            return placement.loaded_bytes - before

        def partially_unload(self, device_to, memory_to_free=0):
            placement = self.videodit_placement
            before = placement.loaded_bytes
            placement.fit(before - memory_to_free)
            self._report()
            return before - placement.loaded_bytes

        def detach(self, unpatch_all=True):
            if unpatch_all:   # False: ComfyUI only re-registers the model, weights stay
                StreamedPlacement.offload(self.videodit_placement)
                self._report()
            return self.model

        def _report(self) -> None:
            placement = self.videodit_placement
            loaded = placement.loaded_bytes
            self.model.model_loaded_weight_memory = loaded
            self.model.model_lowvram = 0 < loaded < self.model_size()
            self.model.device = placement.load_device if loaded else placement.offload_device

    VideoDiTStreamingPatcher.__name__ = VideoDiTStreamingPatcher.__qualname__ = \
        "VideoDiTStreamingPatcher"
    _streaming_patchers[base] = VideoDiTStreamingPatcher
    return VideoDiTStreamingPatcher


# -- the memory plan's view of the device ---------------------------------------------------------
def usable_bytes(device: torch.device) -> int | None:
    """What a step may use on ``device``: free memory plus what loaded models that can be
    unloaded hold (ComfyUI's and ours), minus the reserve. None when unknown."""
    device = torch.device(device)
    free = devices.free_bytes(device)
    if free is None:
        return None
    if devices.shares_host_memory(device):
        return free
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        held = sum(lm.model_loaded_memory() for lm in mm.current_loaded_models
                   if lm.device == device)
    else:
        networks = {id(m.module): m.module for m in list(_known)}
        held = sum(_bytes_on(module, device) for module in networks.values())
    return max(0, free + held - devices.reserved_bytes(device))


def _bytes_on(module: nn.Module, device: torch.device) -> int:
    if devices.shares_host_memory(device):
        return 0
    return sum(t.numel() * t.element_size()
               for t in itertools.chain(module.parameters(), module.buffers())
               if same_device(t.device, device))


def note_plan(working_bytes: int) -> None:
    """Remember the activation bytes of the plan just made (see :func:`everything_fits`)."""
    global _last_plan_working_bytes
    _last_plan_working_bytes = int(working_bytes)


def everything_fits(device: torch.device) -> bool:
    """Whether every known model's weights and the last plan's activations fit on ``device``
    together (False until a plan has been made: release what is not needed)."""
    device = torch.device(device)
    if _last_plan_working_bytes is None or devices.shares_host_memory(device):
        return _last_plan_working_bytes is not None
    total = devices.total_bytes(device)
    if total is None:
        return False
    weights = sum(m.planned_device_bytes for m in list(_known) if m.load_device == device)
    return weights + _last_plan_working_bytes <= total - devices.reserved_bytes(device)
