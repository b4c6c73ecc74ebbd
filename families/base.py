"""What a model family (Wan, and later others) tells the rest of the pack.

The loader node, the sampler loop and the conditioning nodes never name a family: they ask the
family of the model in hand. A family is one object implementing :class:`ModelFamily`:

* recognise its diffusion-model files from tensor names and shapes (:meth:`recognizes`);
* load one into a plain network plus what it is (:meth:`load` -> :class:`LoadedWeights`);
* say which latent format it works in (channels, strides, normalisation, preview colours),
  which text conditioning it reads (:class:`TextSpec`) and which image and video conditioning
  it takes (:class:`ImageInputs`);
* compute one velocity ``v`` for a latent at a noise level (:meth:`velocity`), the only call
  the sampler loop makes into a network (rectified flow: ``x0 = x - sigma * v``).

Families are registered in :mod:`.registry`; the first that recognises a file loads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.conditioning import ModelInputs
from ..core.latent_formats import LatentFormat


@dataclass(frozen=True)
class TextSpec:
    """The text conditioning a family reads."""
    encoder: str           # text encoder kind, e.g. "umt5"
    length: int            # tokens per prompt the network sees
    padding: str = "zeros"  # how shorter prompts are filled: zero rows after the real tokens

    def fit(self, embedding: torch.Tensor) -> torch.Tensor:
        """``[B, n, D]`` -> ``[B, length, D]``: zero rows appended, or extra rows cut."""
        if embedding.shape[1] == self.length:
            return embedding
        fitted = embedding.new_zeros(embedding.shape[0], self.length, embedding.shape[-1])
        keep = min(self.length, embedding.shape[1])
        fitted[:, :keep] = embedding[:, :keep]
        return fitted


@dataclass(frozen=True)
class ImageInputs:
    """The forms of image conditioning a model was trained with (any combination)."""
    channels: bool = False      # extra input channels: mask + image latent (Wan 2.1 I2V ...)
    first_frames: bool = False  # clean first latent frame(s) at timestep 0 (Wan 2.2 TI2V)
    clip_tokens: bool = False   # CLIP-vision tokens beside the text (Wan 2.1 I2V / FLF2V)
    # Channels of the VACE context (control video, mask, reference images; VideoDiT VACE
    # Conditioning) the model takes and cannot run without (Wan VACE models: 96); 0: none.
    vace_channels: int = 0

    @property
    def any(self) -> bool:
        return self.channels or self.first_frames

    @property
    def vace(self) -> bool:
        return self.vace_channels > 0

    @property
    def required(self) -> bool:
        """Channel models cannot run without an image: their extra channels have no default."""
        return self.channels


@dataclass
class LoadedWeights:
    """A family's loader result: the bare network and what it is. No device handling here:
    the caller decides where the weights live (see ``core/placement.py``)."""
    network: nn.Module
    config: Any                  # the family's own config object
    variant: str                 # e.g. "wan2.1-t2v-1.3B"
    latent_format: LatentFormat
    compute_dtype: torch.dtype
    file_name: str
    notes: list[str] = field(default_factory=list)


class ModelFamily:
    """Base class of a model family; subclasses set ``name``/``title``/``text_spec``."""

    name: str = ""            # registry key, e.g. "wan"
    title: str = ""           # for messages, e.g. "Wan 2.1 / 2.2"
    text_spec: TextSpec
    weight_dtype_choices: tuple[str, ...] = ("default",)
    weight_dtype_tooltip: str = ""
    # Advice put into error messages, in the family's own file names.
    vae_hint: str = "use the VAE that belongs to this model"
    image_model_hint: str = "load an image-to-video model"
    vace_model_hint: str = "load a model that takes VACE conditioning"
    expert_pair_hint: str = "use two experts of the same model"

    def recognizes(self, shapes: dict[str, tuple[int, ...]]) -> bool:
        """Whether tensors with these names and shapes are one of this family's models."""
        raise NotImplementedError

    def load(self, path: Path, *, weight_dtype: str = "default", name: str | None = None,
             device: torch.device | None = None) -> LoadedWeights:
        raise NotImplementedError

    def image_inputs(self, config: Any) -> ImageInputs:
        return ImageInputs()

    def pairs_with(self, config: Any, other_config: Any) -> bool:
        """Whether two models can be each other's expert in one sampling run."""
        return config == other_config

    def velocity(self, network: nn.Module, config: Any, x: torch.Tensor, sigma: float,
                 inputs: ModelInputs, *, compute_dtype: torch.dtype,
                 run: Any = None) -> torch.Tensor:
        """``v`` (float32, on the network's device) for the latent ``x`` at noise ``sigma``.

        ``run`` is the sampling run's ``core.run_info.RunInfo`` (None outside a run): a family
        may keep values that do not change between steps in ``run.state`` and reads the
        forward options patches set in ``run.options``.
        """
        raise NotImplementedError

    # -- memory (block swap and the memory plan) -------------------------------------------------
    def blocks(self, network: nn.Module) -> list[nn.Module]:
        """The network's repeated blocks in the order they run, which block swap may stream
        through the compute device; empty when the family has none."""
        return []

    def step_memory(self, config: Any, latent_shape: tuple[int, ...], *,
                    compute_dtype: torch.dtype, passes: int = 1) -> Any:
        """Bytes one forward needs besides the weights (a ``families.memory_plan.StepMemory``)
        for ``passes`` stacked copies of a latent of ``latent_shape``; None when unknown (the
        memory plan then checks the weights only)."""
        return None
