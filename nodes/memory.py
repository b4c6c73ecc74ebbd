"""Memory: the Block Swap node, and the memory plan the sampler and VAE Decode check first."""
from __future__ import annotations

import dataclasses
import logging

from ..errors import InputError
from ._base import videodit_node

log = logging.getLogger("comfyui_videodit")


@videodit_node("VideoDiTBlockSwap", "VideoDiT Block Swap", "loaders")
class VideoDiTBlockSwap:
    DESCRIPTION = ("Runs a diffusion model that does not fit in GPU memory: the transformer "
                   "blocks that do not fit wait in system RAM and are copied to the GPU just "
                   "before they run, the next ones copied while the current one computes. The "
                   "result is exactly the same as with the whole model on the GPU, only "
                   "slower. The input model is left as it is. Before sampling, the console "
                   "shows the memory plan; a clip that cannot fit at all stops there with "
                   "what would fit. For Wan 2.2 A14B put one on each expert.")
    RETURN_TYPES = ("VIDEODIT_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with block swap, for VideoDiT Sampler or another patch node.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("VIDEODIT_MODEL", {
                "tooltip": "From VideoDiT Model Loader, a LoRA loader or another patch node."}),
            "blocks_on_device": ("INT", {
                "default": 0, "min": 0, "max": 200,
                "tooltip": "The most transformer blocks on the GPU at once, the ones being "
                           "copied in included (Wan 1.3B and 5B have 30 blocks, 14B 40). 0: "
                           "decided before each run from the free memory and the clip size. "
                           "More is faster; at least the block count keeps the model whole."}),
            "prefetch": ("INT", {
                "default": 1, "min": 0, "max": 8,
                "tooltip": "Blocks copied ahead while one computes. 1 hides most of the copying "
                           "on a GPU; each more costs one block of GPU memory. 0 copies each "
                           "block only when it is needed."}),
        }}

    def apply(self, model, blocks_on_device, prefetch):
        from ..families.block_swap import BlockSwap
        from ..runtime.memory import ManagedStreamedModel

        if not model.family.blocks(model.network):
            raise InputError(f"{model.file_name} has no transformer blocks that can be "
                             "streamed", input="model",
                             fix="connect a Wan diffusion model, or remove this node")
        return (model.with_patch(BlockSwap(int(blocks_on_device), int(prefetch),
                                           place=ManagedStreamedModel)),)


NODE_CLASSES: list[type] = [VideoDiTBlockSwap]


def plan_before_sampling(model, latent, cfg: float, *, model_low_noise=None,
                         cfg_low_noise: float | None = None):
    """Make the memory plan of a sampling run before anything is allocated: log it, give
    block swap set to auto its number of blocks, and refuse a run that cannot fit.

    Returns the plan (None when the latent is not one the sampler would accept; it says why).
    """
    import torch

    from ..families.memory_plan import apply_plan, model_step, plan_sampling, refusal
    from ..runtime import devices, memory
    from ..samplers.denoise import cfg_batching_setting

    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
        return None
    shape = tuple(samples.shape)
    models = [model] + ([model_low_noise] if model_low_noise is not None else [])
    guided = cfg != 1 or (model_low_noise is not None and (cfg_low_noise or cfg) != 1)
    setting = cfg_batching_setting()
    device = torch.device(model.placement.load_device)

    def plan_for(passes: int):
        return plan_sampling(models, shape, passes=passes, budget=memory.usable_bytes(device),
                             device=str(device),
                             weights_cost=not devices.shares_host_memory(device),
                             decode_dtype_bytes=2 if device.type == "cuda" else 4)

    plan = plan_for(2 if guided and setting else 1)
    if guided and setting:
        plan = dataclasses.replace(plan, batch_cfg=True)
    elif guided and setting is None and device.type == "cuda" and plan.fits:
        # Auto: stack the two guidance passes when that fits with no more blocks streamed.
        stacked = plan_for(2)
        if stacked.fits and all(a.blocks_on_device >= b.blocks_on_device
                                for a, b in zip(stacked.models, plan.models)):
            plan = dataclasses.replace(stacked, batch_cfg=True)
    log.info(plan.line())
    if not plan.fits:
        worst = max(range(len(models)), key=lambda i: plan.models[i].peak)
        failing = models[worst]
        raise refusal(plan, plan.models[worst], shape, failing.latent_format,
                      lambda s: model_step(failing, s, 2 if plan.batch_cfg else 1))
    apply_plan(plan, models)
    memory.note_plan(max(m.step.total for m in plan.models))
    return plan


def check_decode_fits(vae, samples, tile_size: int | None) -> None:
    """Refuse a VAE decode that cannot fit on the device before anything is allocated."""
    from ..families.memory_plan import decode_peak
    from ..runtime import devices, memory

    device = vae.managed.load_device
    if devices.shares_host_memory(device) or samples.ndim != 5:
        return
    budget = memory.usable_bytes(device)
    if budget is None:
        return
    fmt = vae.latent_format
    height, width = (d * fmt.spatial_factor for d in samples.shape[-2:])
    dtype_bytes = vae.dtype.itemsize

    def need(tile: int | None) -> int:
        return decode_peak(fmt, height, width, dtype_bytes, tile=tile, weights=False) + \
            vae.managed.size_bytes

    if need(tile_size) <= budget:
        return
    from ..core.host_memory import gib

    fitting = next((t for t in range(min(tile_size or 4096, max(height, width)) - 64, 127, -64)
                    if need(t) <= budget), None)
    problem = (f"decoding {width}x{height} frames needs about {gib(need(tile_size))} on "
               f"{device}, but only {gib(budget)} can be used")
    if fitting is None:
        raise InputError(problem, input="latent", fix="decode on a device with more free "
                         "memory, or sample a smaller clip")
    if tile_size is None:
        raise InputError(problem, input="tiled", fix=f"turn tiled on with tile_size {fitting} "
                         "or smaller")
    raise InputError(problem, input="tile_size", fix=f"use tile_size {fitting} or smaller")
