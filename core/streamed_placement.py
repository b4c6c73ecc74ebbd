"""A placement that keeps part of a network on the compute device and streams the rest.

``blocks_on_device`` is the most transformer blocks whose weights are on the compute device at
any one time, the blocks being streamed included, so it bounds the device memory the blocks
take. When it is at least the number of blocks the network is loaded whole. Otherwise
``slots = min(1 + prefetch, blocks_on_device)`` of them are kept for streaming (the block
running and the ones copied ahead, see ``core/streaming.py``) and the first
``blocks_on_device - slots`` blocks stay on the device. Everything that is not a block (patch,
text and time embeddings, head) always stays: it is small and runs outside the block loop.

A host memory manager (ComfyUI's) may make room by lowering the number of resident blocks
(:meth:`fit`): the network then streams more and computes the same numbers.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .placement import Placement
from .streaming import (BlockStreamer, Transfer, read_slot, same_device, slot_bytes,
                        tensor_slots, write_slot)


class StreamedPlacement(Placement):
    def __init__(self, module: nn.Module, name: str, blocks: Sequence[nn.Module], *,
                 blocks_on_device: int, prefetch: int = 1,
                 load_device: torch.device | None = None,
                 offload_device: torch.device | None = None,
                 pin_limit_bytes: int | None = None):
        super().__init__(module, name, load_device=load_device, offload_device=offload_device)
        self.blocks = list(blocks)
        if not self.blocks:
            raise ValueError(f"{name}: the network has no blocks to stream")
        inside = {id(m) for block in self.blocks for m in block.modules()}
        self._base_slots = tensor_slots([m for m in module.modules() if id(m) not in inside])
        self._block_slots = [tensor_slots(list(block.modules())) for block in self.blocks]
        # Sizes are fixed: weight patches keep every tensor's shape and dtype.
        self._base_bytes = slot_bytes(self._base_slots)
        self._block_sizes = [slot_bytes(slots) for slots in self._block_slots]
        self.pin_limit_bytes = pin_limit_bytes
        self.blocks_on_device = len(self.blocks)
        self.prefetch = 1
        self.resident_cap: int | None = None   # lowered by a host memory manager, else None
        # Activation bytes the memory plan expects beside the weights (a host memory manager
        # is asked to keep them free).
        self.activation_bytes = 0
        self._placed: int | None = None        # resident blocks on the device now (None: off)
        self._transfer: Transfer | None = None
        self.configure(blocks_on_device, prefetch)

    # -- the plan ------------------------------------------------------------------------------
    def configure(self, blocks_on_device: int, prefetch: int | None = None) -> None:
        """Set the most blocks on the device at once (>= 1) and how many are copied ahead;
        takes effect at the next :meth:`load`."""
        if blocks_on_device < 1:
            raise ValueError(f"blocks_on_device must be at least 1, got {blocks_on_device}")
        self.blocks_on_device = int(blocks_on_device)
        if prefetch is not None:
            self.prefetch = max(0, int(prefetch))

    @property
    def block_count(self) -> int:
        return len(self.blocks)

    @property
    def block_sizes(self) -> list[int]:
        return list(self._block_sizes)

    @property
    def base_bytes(self) -> int:
        """Bytes of everything that is not a block (always resident while in use)."""
        return self._base_bytes

    @property
    def resident_blocks(self) -> int:
        """Blocks that stay on the device while the network runs (the first ones)."""
        if self.blocks_on_device >= self.block_count:
            planned = self.block_count
        else:
            planned = self.blocks_on_device - min(1 + self.prefetch, self.blocks_on_device)
        return planned if self.resident_cap is None else min(planned, self.resident_cap)

    @property
    def slots(self) -> int:
        """Device copies the streamed blocks cycle through (0: nothing is streamed)."""
        streamed = self.block_count - self.resident_blocks
        if streamed == 0:
            return 0
        room = max(1, self.blocks_on_device - self.resident_blocks)
        return min(1 + self.prefetch, room, streamed)

    @property
    def streams(self) -> bool:
        return self.slots > 0

    @property
    def loaded_bytes(self) -> int:
        """Weight bytes on the device between block runs (0 when offloaded)."""
        if self._placed is None:
            return 0
        return self._base_bytes + sum(self._block_sizes[:self._placed])

    @property
    def streaming_bytes(self) -> int:
        """Extra device bytes while the network runs: the copies of streamed blocks."""
        return self.slots * max(self._block_sizes[self.resident_blocks:], default=0)

    def describe(self) -> str:
        if not self.streams:
            return f"all {self.block_count} blocks on the device"
        return (f"{self.resident_blocks} of {self.block_count} blocks resident, the others "
                f"streamed through {self.slots} slot(s) (prefetch {self.slots - 1})")

    # -- moving weights --------------------------------------------------------------------------
    def load(self) -> None:
        self._place()

    def offload(self) -> None:
        self._unplace()

    def _place(self) -> None:
        """Put the non-block weights and the resident blocks on the device, the rest off."""
        want = self.resident_blocks
        if self._placed == want and self._still_placed():
            self._pin_streamed(want)  # weight patches may have swapped in unpinned tensors
            return
        self._move(self._base_slots, self.load_device)
        for index, slots in enumerate(self._block_slots):
            if index < want:
                self._move(slots, self.load_device)
            else:
                self._move(slots, self.offload_device, pin=True)
        self._placed = want

    def _unplace(self) -> None:
        self._move(self._base_slots, self.offload_device)
        for slots in self._block_slots:
            self._move(slots, self.offload_device)
        self._placed = None

    def fit(self, budget_bytes: float) -> int:
        """Hold at most ``budget_bytes`` of weights on the device (never less than the non-block
        weights and no block more than planned); moves them now (without asking the host: this
        is how the host's memory manager shrinks or grows us). Returns the bytes loaded."""
        sizes = self._block_sizes
        room = budget_bytes - self._base_bytes
        cap = 0
        while cap < self.block_count and sizes[cap] <= room:
            room -= sizes[cap]
            cap += 1
        self.resident_cap = cap
        self._place()
        return self.loaded_bytes

    @contextmanager
    def use(self, *, offload_after: bool = False) -> Iterator[nn.Module]:
        self.load()
        try:
            with self.streaming():
                yield self.module
        finally:
            if offload_after:
                self.offload()

    @contextmanager
    def streaming(self) -> Iterator[None]:
        """While inside, the streamed blocks are copied in as they run (weights placed)."""
        streamer = None
        if self.streams:
            streamer = BlockStreamer(self.blocks, range(self.resident_blocks, self.block_count),
                                     self.slots, self.transfer)
            streamer.attach(self.module)
        try:
            yield
        finally:
            if streamer is not None:
                streamer.detach()

    @property
    def transfer(self) -> Transfer:
        if self._transfer is None or not same_device(self._transfer.device, self.load_device):
            self._transfer = Transfer(self.load_device, pin_limit_bytes=self.pin_limit_bytes)
        return self._transfer

    def _still_placed(self) -> bool:
        """Whether nothing moved the weights behind our back (another placement of the same
        network, a host unloading it)."""
        def on(slots, device) -> bool:
            return not slots or same_device(read_slot(slots[0]).device, device)

        return (on(self._base_slots, self.load_device)
                and (not self._placed or on(self._block_slots[0], self.load_device))
                and (self._placed == self.block_count
                     or on(self._block_slots[-1], self.offload_device)))

    def _pin_streamed(self, resident: int) -> None:
        if self.transfer.pin_limit_bytes == 0:
            return
        for slots in self._block_slots[resident:]:
            self._move(slots, self.offload_device, pin=True)

    def _move(self, slots, device: torch.device, *, pin: bool = False) -> None:
        for slot in slots:
            tensor = read_slot(slot)
            moved = tensor.to(device)
            if pin:
                moved = self.transfer.pin(moved)
            if moved is not tensor:
                write_slot(slot, moved)
