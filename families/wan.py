"""The Wan family: Wan 2.1 (T2V 1.3B/14B, I2V, FLF2V, VACE 1.3B/14B) and Wan 2.2 (TI2V 5B,
A14B experts, VACE-Fun A14B experts).

Files are read by ``model_loaders/wan_dit_loader.py`` (original, ComfyUI and diffusers layouts,
every dtype and fp8 form); this module adds what the sampler needs to know about them.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.conditioning import ModelInputs
from ..core.latent_formats import WAN21, WAN22
from ..model_loaders import wan_dit_loader
from ..networks.wan_dit import CrossAttentionCache, WanDiTConfig
from . import speed_options
from .base import ImageInputs, LoadedWeights, ModelFamily, TextSpec


class WanFamily(ModelFamily):
    name = "wan"
    title = "Wan 2.1 / 2.2"
    # umT5-XXL embeddings, each prompt zero-padded to 512 tokens (Wan's text_len).
    text_spec = TextSpec(encoder="umt5", length=512, padding="zeros")
    weight_dtype_choices = wan_dit_loader.WEIGHT_DTYPE_CHOICES
    weight_dtype_tooltip = wan_dit_loader.WEIGHT_DTYPE_TOOLTIP
    vae_hint = ("make the latent with the VAE that belongs to this model (Wan 2.1 models and "
                "Wan 2.2 A14B: wan_2.1_vae; Wan 2.2 5B: wan2.2_vae)")
    image_model_hint = ("load an image-to-video model (Wan 2.1 I2V, Wan 2.2 TI2V 5B or A14B I2V) "
                        "or remove VideoDiT Image To Video")
    vace_model_hint = ("load a Wan VACE model (Wan 2.1 VACE 1.3B / 14B, or the Wan 2.2 VACE-Fun "
                       "A14B experts) or remove VideoDiT VACE Conditioning")
    expert_pair_hint = ("use the high-noise and low-noise files of the same Wan 2.2 A14B model "
                        "(both VACE-Fun, or neither)")

    def recognizes(self, shapes: dict[str, tuple[int, ...]]) -> bool:
        return wan_dit_loader.looks_like_wan_dit(shapes)

    def load(self, path: Path, *, weight_dtype: str = "default", name: str | None = None,
             device: torch.device | None = None) -> LoadedWeights:
        loaded = wan_dit_loader.load_wan_dit(path, weight_dtype, name=name, device=device)
        # The 48-channel models (Wan 2.2 TI2V 5B) work in the Wan 2.2 VAE's latents.
        fmt = WAN22 if loaded.config.in_dim == WAN22.channels else WAN21
        return LoadedWeights(loaded.network, loaded.config, loaded.variant, fmt,
                             loaded.compute_dtype, loaded.file_name, list(loaded.notes))

    def image_inputs(self, config: WanDiTConfig) -> ImageInputs:
        return ImageInputs(channels=config.in_dim != config.out_dim,
                           first_frames=config.model_type == "ti2v",
                           clip_tokens=config.has_image_input,
                           vace_channels=config.vace_in_dim if config.has_vace else 0)

    def pairs_with(self, config: WanDiTConfig, other_config: WanDiTConfig) -> bool:
        # A14B high/low-noise experts: the same input layout (and so the same latents), and
        # both or neither taking the VACE context.
        return (config.in_dim == other_config.in_dim and config.out_dim == other_config.out_dim
                and config.has_vace == other_config.has_vace
                and config.vace_in_dim == other_config.vace_in_dim)

    def velocity(self, network: nn.Module, config: WanDiTConfig, x: torch.Tensor, sigma: float,
                 inputs: ModelInputs, *, compute_dtype: torch.dtype,
                 run: Any = None) -> torch.Tensor:
        device = next(network.parameters()).device
        t_value = model_timestep(sigma, inputs.integer_timesteps)
        if inputs.first_frames:
            t = per_token_timesteps(x.shape, inputs.first_frames, t_value, config.patch_size)
        else:
            t = torch.full((x.shape[0],), t_value)
        extra = {}
        if inputs.concat_latent is not None:
            extra["y"] = inputs.concat_latent.to(device, compute_dtype)
        if inputs.clip_features is not None and config.has_image_input:
            extra["clip_features"] = inputs.clip_features.to(device, compute_dtype)
        if inputs.vace_context is not None:
            extra["vace_context"] = inputs.vace_context.to(device, compute_dtype)
            extra["vace_strength"] = float(inputs.vace_strength)
        extra.update(speed_options.forward_options(run, self.blocks(network), device,
                                                   compute_dtype, config.head_dim))
        if speed_options.reuse_text_kv(run):
            extra["cross_cache"] = text_kv_cache(run, network, inputs)
        return network(x.to(device, compute_dtype), t.to(device),
                       inputs.text.to(device, compute_dtype), **extra).float()

    # -- memory (block swap and the memory plan) -------------------------------------------------
    def blocks(self, network: nn.Module) -> list[nn.Module]:
        # VACE models: each VACE block right after the main block whose output it adds to.
        return network.blocks_in_run_order()

    def step_memory(self, config: WanDiTConfig, latent_shape: tuple[int, ...], *,
                    compute_dtype: torch.dtype, passes: int = 1):
        from .wan_memory import FLOAT32, wan_step_memory

        memory = wan_step_memory(config, latent_shape, compute_dtype=compute_dtype, passes=passes)
        if not config.has_vace:
            return memory
        # Alive beside the main stream through the block loop: the VACE stream (float32), the
        # embedded tokens its first block reads (float32; freed after it, counted throughout),
        # the hint being added (float32 once widened) and the VACE context itself.
        batch, _, frames, height, width = latent_shape
        batch *= passes
        unit = batch * memory.tokens * config.dim
        context = batch * config.vace_in_dim * frames * height * width
        extra = 3 * unit * FLOAT32 + context * torch.empty((), dtype=compute_dtype).element_size()
        return dataclasses.replace(memory, persistent=memory.persistent + extra)


def model_timestep(sigma: float, integer: bool) -> float:
    """Wan's reference samplers hand the network integer timesteps ``int(sigma * 1000)``; so
    does diffusers' UniPC. Unrounded is diffusers' flow-match Euler."""
    t = sigma * 1000.0
    return float(math.floor(t)) if integer else t


def per_token_timesteps(shape, given_frames: int, t_value: float, patch) -> torch.Tensor:
    """[B, tokens]: 0 for the tokens of the given first latent frames, t elsewhere (TI2V)."""
    batch, _, frames, height, width = shape
    pt, ph, pw = patch
    per_frame = (height // ph) * (width // pw)
    t = torch.full((batch, (frames // pt) * per_frame), t_value)
    t[:, :(given_frames // pt) * per_frame] = 0.0
    return t


# -- text keys/values kept for a sampling run -------------------------------------------------
# Each block's cross-attention keys and values depend only on the text (and CLIP image tokens)
# and the weights. Within one sampling run neither changes: the run belongs to one model
# object, whose weight patches (a LoRA merge) are applied before every call and stay the same
# for the whole run, and ``run.state`` is dropped when the run ends. So they are computed at
# the first step and read at every later one. A text is recognised by the very tensor (not
# changed in place since) or, for a tensor made anew each step (the positive and negative
# prompts stacked for a batched cfg pass), by equal shape and values.
_TEXT_KV_STATE = "wan.text_kv"
_TEXTS_KEPT = 4   # cond, uncond, both stacked, and one spare; older ones are dropped


class _Remembered:
    """A tensor as it was when an entry was made (None stays None).

    An ordinary tensor's version counter says whether it was changed in place since. Tensors
    made under ``torch.inference_mode`` (ComfyUI runs every node so) have no version counter;
    for them a copy is kept and compared by value.
    """

    def __init__(self, tensor: torch.Tensor | None):
        self.tensor = tensor
        self.snapshot = None
        self.version = 0
        if tensor is not None:
            if tensor.is_inference():
                self.snapshot = tensor.clone()
            else:
                self.version = tensor._version

    def matches(self, other: torch.Tensor | None) -> bool:
        mine = self.tensor
        if mine is None or other is None:
            return mine is None and other is None
        if self.snapshot is not None:
            return _same_values(other, self.snapshot)
        if mine._version != self.version:   # changed in place: no longer what was cached
            return False
        return other is mine or _same_values(other, mine)


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)


class _TextEntry:
    def __init__(self, inputs: ModelInputs):
        self.text = _Remembered(inputs.text)
        self.clip = _Remembered(inputs.clip_features)
        self.cache = CrossAttentionCache()

    def matches(self, inputs: ModelInputs) -> bool:
        return self.text.matches(inputs.text) and self.clip.matches(inputs.clip_features)


def text_kv_cache(run, network: nn.Module, inputs: ModelInputs) -> CrossAttentionCache:
    """The run's cross-attention cache for this text (an empty one the first time)."""
    per_network = run.state.setdefault(_TEXT_KV_STATE, {})
    entries: list[_TextEntry] = per_network.setdefault(network, [])
    for index, entry in enumerate(entries):
        if entry.matches(inputs):
            entries.insert(0, entries.pop(index))
            return entry.cache
    entries.insert(0, _TextEntry(inputs))
    del entries[_TEXTS_KEPT:]
    return entries[0].cache
