"""The memory plan of a sampling run, made before anything is allocated.

For each model that will run (one, or the two Wan 2.2 A14B experts, which never sit on the
device together) the plan adds up what one sampling step holds on the compute device:

* **resident weights**: everything that is not a transformer block, plus the blocks that stay;
* **streaming copies**: with block swap, the blocks in flight (the one running and the ones
  copied ahead, see ``core/streaming.py``);
* **activations of one forward**: what stays alive through the block loop and the most one
  block adds on top of it, the attention working set included (the family's
  ``step_memory``, checked against measured peaks by ``bench/memory_plan.py``);

and compares the largest of them with what the device can give (free memory plus what models
that can be unloaded hold, minus the reserve). For block swap set to "auto" it picks the most
blocks that fit. The VAE decode that follows sampling runs after the transformer is off the
device, so it is planned on its own (:func:`decode_peak`).

When the step cannot fit at all, :func:`refusal` builds the error, naming the input to change
and what would fit: fewer frames, a smaller size, fp8 weights, block swap.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from torch import nn

from ..core.host_memory import gib
from ..core.latent_formats import LatentFormat
from ..core.streamed_placement import StreamedPlacement
from ..errors import InputError

BLOCK_SWAP_NODE = "VideoDiT Block Swap"


@dataclass(frozen=True)
class StepMemory:
    """Bytes one forward pass needs on the compute device besides the weights."""
    tokens: int        # sequence length of one pass
    persistent: int    # alive through the whole block loop (residual stream, embeddings ...)
    block_peak: int    # the most one block adds on top while it runs
    attention: int     # the attention working set (part of block_peak when it is the peak)

    @property
    def total(self) -> int:
        return self.persistent + self.block_peak


@dataclass(frozen=True)
class WeightLayout:
    """A network's weight bytes as block swap sees them."""
    base: int                      # everything that is not a block (always resident)
    blocks: tuple[int, ...]        # each block, in the order they run

    @classmethod
    def of(cls, network: nn.Module, blocks: Sequence[nn.Module]) -> "WeightLayout":
        def size(module: nn.Module) -> int:
            return sum(t.numel() * t.element_size()
                       for t in list(module.parameters()) + list(module.buffers()))
        block_bytes = tuple(size(b) for b in blocks)
        return cls(size(network) - sum(block_bytes), block_bytes)

    @property
    def total(self) -> int:
        return self.base + sum(self.blocks)

    def on_device(self, blocks_on_device: int, prefetch: int) -> tuple[int, int]:
        """(resident bytes, streaming bytes) with at most ``blocks_on_device`` blocks there."""
        count = len(self.blocks)
        if blocks_on_device >= count:
            return self.total, 0
        slots = min(1 + prefetch, blocks_on_device)
        resident = blocks_on_device - slots
        return (self.base + sum(self.blocks[:resident]),
                slots * max(self.blocks[resident:], default=0))


@dataclass(frozen=True)
class SwapSetting:
    """What the block swap patch asks for (None on a model without it)."""
    blocks_on_device: int      # 0: the plan decides
    prefetch: int


@dataclass(frozen=True)
class ModelPlan:
    label: str
    weights: WeightLayout
    step: StepMemory
    blocks_on_device: int      # as planned (== the block count: loaded whole)
    prefetch: int              # blocks copied ahead, as planned
    swap: SwapSetting | None
    weights_cost: bool = True  # False when the compute device is the memory weights wait in

    @property
    def block_count(self) -> int:
        return len(self.weights.blocks)

    @property
    def resident_bytes(self) -> int:
        return self.weights.on_device(self.blocks_on_device, self.prefetch)[0]

    @property
    def streaming_bytes(self) -> int:
        return self.weights.on_device(self.blocks_on_device, self.prefetch)[1]

    @property
    def peak(self) -> int:
        weights = self.resident_bytes + self.streaming_bytes if self.weights_cost else 0
        return weights + self.step.total

    def describe(self) -> str:
        if self.blocks_on_device >= self.block_count:
            blocks = f"all {self.block_count} blocks on the device"
        else:
            slots = min(1 + self.prefetch, self.blocks_on_device)
            blocks = (f"{self.blocks_on_device} of {self.block_count} blocks on the device "
                      f"({self.blocks_on_device - slots} resident + {slots} streaming)")
        if self.swap is not None and self.swap.blocks_on_device == 0:
            blocks += " [auto]"
        return (f"{self.label}: {blocks}, weights {gib(self.resident_bytes)} + streaming "
                f"{gib(self.streaming_bytes)}, activations {gib(self.step.total)} (attention "
                f"{gib(self.step.attention)})")


@dataclass(frozen=True)
class MemoryPlan:
    device: str
    budget: int | None                 # bytes the step may use (None: unknown, not checked)
    models: tuple[ModelPlan, ...]
    decode: int = 0                    # VAE decode peak after sampling (untiled)
    decode_tiled: int = 0              # ... with the default tiles
    batch_cfg: bool = False            # the guidance passes are planned stacked in one batch

    @property
    def peak(self) -> int:
        return max(m.peak for m in self.models)

    @property
    def fits(self) -> bool:
        return self.budget is None or self.peak <= self.budget

    @property
    def decode_fits(self) -> bool:
        return self.budget is None or self.decode <= self.budget

    def line(self) -> str:
        budget = "free memory unknown" if self.budget is None else f"{gib(self.budget)} usable"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        decode = f"VAE decode {gib(self.decode)}"
        if not self.decode_fits:
            decode += f" (too much: use tiled decode, {gib(self.decode_tiled)} with 512px tiles)"
        models = "; ".join(m.describe() for m in self.models)
        if self.batch_cfg:
            models += "; positive and negative passes stacked"
        return (f"memory plan on {self.device} ({budget}): {models}; step peak "
                f"{gib(self.peak)}, {verdict}; {decode}")


def plan_model(label: str, weights: WeightLayout, step: StepMemory, *,
               swap: SwapSetting | None, budget: int | None,
               weights_cost: bool = True) -> ModelPlan:
    """The plan of one model: whole without block swap, else the setting or, for auto, the
    most blocks that fit (at least one; when even one does not fit the plan says so)."""
    count = len(weights.blocks)
    plan = ModelPlan(label, weights, step, count, 0, swap, weights_cost)
    if swap is None:
        return plan
    if swap.blocks_on_device > 0:
        return replace(plan, blocks_on_device=min(swap.blocks_on_device, count),
                       prefetch=swap.prefetch)
    if budget is None or not weights_cost or plan.peak <= budget:
        return plan
    for prefetch in range(swap.prefetch, -1, -1):
        chosen = _most_blocks(weights, step, budget, prefetch)
        if chosen is not None:
            return replace(plan, blocks_on_device=chosen, prefetch=prefetch)
    return replace(plan, blocks_on_device=1, prefetch=0)   # the least it can do; won't fit


def _most_blocks(weights: WeightLayout, step: StepMemory, budget: int,
                 prefetch: int) -> int | None:
    count = len(weights.blocks)
    best = None
    for blocks_on_device in range(1 + prefetch, count):
        resident, streaming = weights.on_device(blocks_on_device, prefetch)
        if resident + streaming + step.total > budget:
            break
        best = blocks_on_device
    return best


# -- VAE decode ---------------------------------------------------------------------------------
# Peak bytes of one decode on the device, per output pixel and per byte of the VAE's dtype,
# plus a fixed part, measured on the CPU (bench/memory_plan.py: decode one latent frame at a
# time, 4 output frames per chunk, the causal caches of every layer).
_DECODE_PER_PIXEL = {"wan21": 3720.0, "wan22": 2910.0}
_DECODE_FIXED = {"wan21": 0, "wan22": 76 * 1024 ** 2}
_VAE_WEIGHTS = {"wan21": 126_892_531, "wan22": 704_688_668}   # parameters
DEFAULT_TILE = 512


def decode_peak(fmt: LatentFormat, height: int, width: int, dtype_bytes: int, *,
                tile: int | None = None, weights: bool = True) -> int:
    """Device bytes of a VAE decode at ``height`` x ``width`` pixels (tiles of ``tile``)."""
    if tile is not None:
        height, width = min(height, tile), min(width, tile)
    per_pixel = _DECODE_PER_PIXEL.get(fmt.name, max(_DECODE_PER_PIXEL.values()))
    activations = _DECODE_FIXED.get(fmt.name, 0) + per_pixel * dtype_bytes * height * width
    weight_bytes = _VAE_WEIGHTS.get(fmt.name, 0) * dtype_bytes if weights else 0
    return int(activations + weight_bytes)


# -- refusing -----------------------------------------------------------------------------------
StepEstimate = Callable[[tuple[int, ...]], StepMemory]


def refusal(plan: MemoryPlan, model: ModelPlan, latent_shape: tuple[int, ...],
            fmt: LatentFormat, estimate: StepEstimate) -> InputError:
    """The error for a plan that does not fit: which input to change, and what would fit."""
    budget = plan.budget or 0
    weights = model.resident_bytes + model.streaming_bytes if model.weights_cost else 0
    need = (f"{model.label} needs {gib(model.peak)} on {plan.device} for one step "
            f"({gib(weights)} of weights, {gib(model.step.total)} of activations), but only "
            f"{gib(budget)} can be used")
    if model.swap is not None and model.swap.blocks_on_device > 0:
        chosen = plan_model(model.label, model.weights, model.step,
                            swap=SwapSetting(0, model.swap.prefetch), budget=budget)
        if chosen.peak <= budget:
            return InputError(need, node=BLOCK_SWAP_NODE, input="blocks_on_device",
                              fix=f"set it to {chosen.blocks_on_device} or less, or to 0 so "
                              "the plan picks what fits")
    if model.swap is None:
        streamed = plan_model(model.label, model.weights, model.step,
                              swap=SwapSetting(0, 1), budget=budget)
        if streamed.peak <= budget:
            return InputError(need, input="model",
                              fix=f"add {BLOCK_SWAP_NODE} between the model loader and this "
                              f"node (blocks_on_device 0 lets it keep {streamed.blocks_on_device}"
                              f" of {model.block_count} blocks on the device and stream the "
                              "rest)" + _fp8_hint(model, budget))
    least = plan_model(model.label, model.weights, model.step,
                       swap=SwapSetting(0, 0), budget=budget)
    minimal = least.resident_bytes + least.streaming_bytes
    options = _smaller_clips(latent_shape, fmt, estimate, budget - minimal)
    streaming = "" if model.swap is not None else f" with {BLOCK_SWAP_NODE}"
    fix = (" or ".join(options) + streaming if options else
           "free memory on the device (close other programs) or use a device with more")
    return InputError(need, input="latent", fix=fix + "; tiled VAE decode keeps the decode "
                      "small afterwards")


def _fp8_hint(model: ModelPlan, budget: int) -> str:
    narrow = sum(model.weights.blocks) // 2 + model.weights.base   # fp8 block linears
    if narrow + model.step.total <= budget and sum(model.weights.blocks) > 0:
        return (f", or load the model with weight_dtype fp8_e4m3fn (about {gib(narrow)} of "
                "weights, all on the device)")
    return ""


def _smaller_clips(latent_shape: tuple[int, ...], fmt: LatentFormat, estimate: StepEstimate,
                   room: int) -> list[str]:
    """Frame counts and sizes whose activations fit in ``room`` bytes, as advice."""
    batch, channels, frames, height, width = latent_shape
    options = []
    for latent_frames in range(frames - 1, 0, -1):
        if estimate((batch, channels, latent_frames, height, width)).total <= room:
            pixel_frames = (latent_frames - 1) * fmt.temporal_factor + 1
            options.append(f"use {pixel_frames} frames or fewer at this size")
            break
    for scale in (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25):
        h, w = _even(height * scale), _even(width * scale)
        if h >= 2 and w >= 2 and estimate((batch, channels, frames, h, w)).total <= room:
            options.append(f"use {w * fmt.spatial_factor}x{h * fmt.spatial_factor} or smaller "
                           "at this length")
            break
    return options


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


# -- a sampling run's models --------------------------------------------------------------------
def swap_of(model) -> SwapSetting | None:
    """The block swap setting governing a VIDEODIT_MODEL (its last block swap patch), if any."""
    for patch in reversed(model.patches):
        setting = getattr(patch, "setting", None)
        if isinstance(setting, SwapSetting):
            return setting
    return None


def model_step(model, latent_shape: tuple[int, ...], passes: int) -> StepMemory:
    step = model.family.step_memory(model.config, tuple(latent_shape),
                                    compute_dtype=model.compute_dtype, passes=passes)
    return step if step is not None else StepMemory(0, 0, 0, 0)


def plan_sampling(models: Sequence, latent_shape: tuple[int, ...], *, passes: int,
                  budget: int | None, device: str, weights_cost: bool = True,
                  decode_dtype_bytes: int = 2) -> MemoryPlan:
    """The plan for sampling ``latent_shape`` with these VIDEODIT_MODELs (the A14B experts run
    one at a time), ``passes`` guidance passes stacked per model call."""
    plans = []
    for model in models:
        blocks = model.family.blocks(model.network)
        weights = WeightLayout.of(model.network, blocks)
        plans.append(plan_model(model.file_name, weights, model_step(model, latent_shape, passes),
                                swap=swap_of(model), budget=budget, weights_cost=weights_cost))
    fmt = models[0].latent_format
    height, width = (d * fmt.spatial_factor for d in latent_shape[-2:])
    return MemoryPlan(device, budget, tuple(plans),
                      decode_peak(fmt, height, width, decode_dtype_bytes),
                      decode_peak(fmt, height, width, decode_dtype_bytes, tile=DEFAULT_TILE))


def apply_plan(plan: MemoryPlan, models: Sequence) -> None:
    """Hand each streamed model its planned blocks (auto settings get the plan's choice) and the
    activation bytes its host should keep free beside the weights."""
    for model, planned in zip(models, plan.models):
        placement = model.active_placement
        if isinstance(placement, StreamedPlacement):
            placement.configure(planned.blocks_on_device, planned.prefetch)
            placement.activation_bytes = planned.step.total
