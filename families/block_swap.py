"""Block swap as a model patch: the transformer blocks that do not fit stream through the device.

:class:`BlockSwap` changes only where the shared network's weights are while a model object
runs: it hands ``VideoModel`` a :class:`..core.streamed_placement.StreamedPlacement` (made by
the ``place`` factory it is given; the node passes the runtime's ComfyUI-aware one) in place
of the loader's placement. Nothing about the weights or the velocity call changes, so a
streamed model computes exactly what the same model computes fully loaded, and a branch of
the graph without the patch keeps loading the network whole.

``blocks_on_device`` is the most blocks on the device at once (streamed ones included); 0 lets
the memory plan choose (``families/memory_plan.py``) before each sampling run. ``prefetch`` is
how many blocks are copied ahead of the one running.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

from ..core.placement import Placement
from ..core.streamed_placement import StreamedPlacement
from .memory_plan import SwapSetting
from .speed_options import STREAMED_BLOCKS
from .model import ModelPatch, VideoModel

StreamedFactory = Callable[..., StreamedPlacement]


class BlockSwap(ModelPatch):
    name = "block swap"

    def __init__(self, blocks_on_device: int = 0, prefetch: int = 1,
                 place: StreamedFactory = StreamedPlacement):
        if blocks_on_device < 0 or prefetch < 0:
            raise ValueError("blocks_on_device and prefetch must be 0 or more")
        self.setting = SwapSetting(int(blocks_on_device), int(prefetch))
        self._place = place
        # One streamed placement per loaded network this patch is used with (model objects
        # made from one loader share it, so the weights are not placed twice).
        self._placements: weakref.WeakKeyDictionary[Placement, StreamedPlacement] = \
            weakref.WeakKeyDictionary()

    @property
    def auto(self) -> bool:
        return self.setting.blocks_on_device == 0

    def placement(self, model: VideoModel, base: Placement) -> StreamedPlacement:
        placement = self._placements.get(base)
        if placement is None:
            blocks = model.family.blocks(base.module)
            # Until a plan says otherwise, auto keeps everything on the device.
            placement = self._place(base.module, base.name, blocks,
                                    blocks_on_device=self.setting.blocks_on_device or len(blocks),
                                    prefetch=self.setting.prefetch,
                                    load_device=base.load_device,
                                    offload_device=base.offload_device)
            self._placements[base] = placement
        return placement

    def wrap_velocity(self, velocity, model: VideoModel, run):
        # Tells the family's forward its blocks are streamed (compiled blocks stay off).
        run.options[STREAMED_BLOCKS] = True
        return velocity

    def describe(self) -> str:
        blocks = "auto" if self.auto else self.setting.blocks_on_device
        return f"block swap ({blocks} blocks on the device, prefetch {self.setting.prefetch})"


def swap_setting(model: VideoModel) -> SwapSetting | None:
    """The block swap setting governing ``model`` (the last block swap patch), if any."""
    setting = None
    for patch in model.patches:
        if isinstance(patch, BlockSwap):
            setting = patch.setting
    return setting
