"""Running a network whose blocks do not all fit on the compute device: stream them through.

The blocks that stay off the device wait in system memory. Each one is copied to the compute
device just before it runs and its copy is dropped right after, and while a block computes the
copies of the next ``prefetch`` blocks are already on their way: on CUDA on a second stream
(the compute stream waits for an event recorded after each copy, so compute never reads a
half-copied weight), elsewhere as a plain copy made in order (no overlap, same numbers).

A copy holds exactly the bytes of the original, in the original dtype (fp8 weights travel as
fp8 and the layer widens them on the device as it always does), and the block runs the same
kernels on it, so a streamed network computes bit for bit what a resident one computes.

Copies are swapped in underneath the modules (``parameter.data`` and the buffer entries),
never by replacing modules or parameters, so anything holding a module or a parameter (forward
hooks, weight patches, optimisers) keeps working. What a block holds when it is fetched is
what gets copied: a weight patch applied to the offloaded tensor travels with it.

:class:`Transfer` is the only place bytes cross to the device; tests and benchmarks wrap its
``copy`` to count what is resident.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

# One tensor a module owns: (module, attribute name, whether it is a parameter).
Slot = tuple[nn.Module, str, bool]


def tensor_slots(modules: Sequence[nn.Module]) -> list[Slot]:
    """Every parameter and buffer of ``modules`` (each module's own, not its children's)."""
    slots: list[Slot] = []
    for module in modules:
        slots += [(module, name, True) for name, p in module._parameters.items() if p is not None]
        slots += [(module, name, False) for name, b in module._buffers.items() if b is not None]
    return slots


def read_slot(slot: Slot) -> torch.Tensor:
    module, name, is_parameter = slot
    return module._parameters[name].data if is_parameter else module._buffers[name]


def write_slot(slot: Slot, tensor: torch.Tensor) -> None:
    module, name, is_parameter = slot
    if is_parameter:
        module._parameters[name].data = tensor
    else:
        module._buffers[name] = tensor


def same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` are the same device (torch.device equality says otherwise)."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def slot_bytes(slots: Sequence[Slot]) -> int:
    return sum(t.numel() * t.element_size() for t in map(read_slot, slots))


class Transfer:
    """Copies tensors to the compute device, overlapped with compute where the device can.

    ``pin_limit_bytes``: how much offloaded weight the whole process may pin (page-lock) so
    copies run asynchronously (None: no limit; 0: never pin). Pinning only applies to CUDA.
    """

    pinned_bytes = 0   # pinned by every transfer of the process (never lowered: conservative)

    def __init__(self, device: torch.device, *, pin_limit_bytes: int | None = None):
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        self.pin_limit_bytes = pin_limit_bytes if cuda else 0

    def pin(self, tensor: torch.Tensor) -> torch.Tensor:
        """A page-locked copy of a CPU tensor while the pin budget lasts (else the tensor)."""
        if (self.pin_limit_bytes == 0 or tensor.device.type != "cpu" or tensor.is_pinned()):
            return tensor
        size = tensor.numel() * tensor.element_size()
        if self.pin_limit_bytes is not None and Transfer.pinned_bytes + size > self.pin_limit_bytes:
            return tensor
        try:
            pinned = tensor.pin_memory()
        except RuntimeError:  # the OS refused more page-locked memory: copy from pageable
            self.pin_limit_bytes = 0
            return tensor
        Transfer.pinned_bytes += size
        return pinned

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        """A new tensor on the compute device with ``tensor``'s bytes (always a real copy, even
        when the compute device is the CPU, so what is resident can be counted)."""
        out = torch.empty_like(tensor, device=self.device)
        out.copy_(tensor, non_blocking=self.stream is not None)
        return out

    def start(self, tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], object]:
        """Begin copying ``tensors``; returns the copies and what :meth:`wait` needs."""
        if self.stream is None:
            return [self.copy(t) for t in tensors], None
        # The copies' memory is allocated on the compute stream (where it is freed again), and
        # may have been in use by compute work queued earlier: the copy stream waits for it.
        compute = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(compute)
        with torch.cuda.stream(self.stream):
            copies = [self.copy(t) for t in tensors]
            done = torch.cuda.Event()
            done.record(self.stream)
        return copies, done

    def wait(self, done: object) -> None:
        """Make the compute stream wait until a started copy has landed."""
        if done is not None:
            torch.cuda.current_stream(self.device).wait_event(done)


@dataclass
class _Fetched:
    copies: list[torch.Tensor]
    homes: list[torch.Tensor]   # what the slots held before (the offloaded tensors)
    done: object
    active: bool = False


class BlockStreamer:
    """Streams the ``streamed`` blocks of a network through ``slots`` device copies.

    ``attach(network)`` registers forward hooks (on the network, to start the first copies as
    soon as it is called, and on every streamed block); ``detach()`` removes them and drops
    every copy. At most ``slots`` streamed blocks have a copy at any moment: the one running
    plus the ones being fetched ahead. Blocks are expected to run in order; one that runs out
    of order is fetched on the spot, so the result never depends on the order.
    """

    def __init__(self, blocks: Sequence[nn.Module], streamed: Sequence[int], slots: int,
                 transfer: Transfer):
        if slots < 1:
            raise ValueError("streaming needs at least one block slot on the device")
        self.blocks = list(blocks)
        self.order = sorted(streamed)
        self.streamed = set(self.order)
        self.slots = slots
        self.transfer = transfer
        self._block_slots = {i: tensor_slots(list(self.blocks[i].modules())) for i in self.order}
        self._fetched: dict[int, _Fetched] = {}
        self._handles: list = []

    # -- hooks -----------------------------------------------------------------------------------
    def attach(self, network: nn.Module) -> None:
        self.detach()
        self._handles.append(network.register_forward_pre_hook(
            lambda module, args: self._fetch_ahead(-1)))
        for index in self.order:
            block = self.blocks[index]
            self._handles.append(block.register_forward_pre_hook(
                lambda module, args, index=index: self._before(index)))
            self._handles.append(block.register_forward_hook(
                lambda module, args, output, index=index: self._after(index)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for index in list(self._fetched):
            self._release(index)

    @property
    def copies_alive(self) -> int:
        return len(self._fetched)

    # -- one block -------------------------------------------------------------------------------
    def _before(self, index: int) -> None:
        if index not in self._fetched:
            # Out of order (or nothing fetched ahead): make room and fetch it now.
            for other in [i for i in self._fetched if i != index]:
                if len(self._fetched) < self.slots:
                    break
                self._release(other)
            self._fetch(index)
        fetched = self._fetched[index]
        self.transfer.wait(fetched.done)
        for slot, copy in zip(self._block_slots[index], fetched.copies):
            write_slot(slot, copy)
        fetched.active = True
        self._fetch_ahead(index)

    def _after(self, index: int) -> None:
        self._release(index)

    def _fetch_ahead(self, index: int) -> None:
        for ahead in self.order:
            if len(self._fetched) >= self.slots:
                return
            if ahead > index and ahead not in self._fetched:
                self._fetch(ahead)

    def _fetch(self, index: int) -> None:
        homes = [read_slot(slot) for slot in self._block_slots[index]]
        copies, done = self.transfer.start(homes)
        self._fetched[index] = _Fetched(copies, homes, done)

    def _release(self, index: int) -> None:
        fetched = self._fetched.pop(index, None)
        if fetched is None:
            return
        if fetched.active:
            for slot, home in zip(self._block_slots[index], fetched.homes):
                write_slot(slot, home)
        else:
            # A copy still in flight: its memory goes back to the compute stream's pool, so
            # that stream must not reuse it before the copy has finished writing.
            self.transfer.wait(fetched.done)
