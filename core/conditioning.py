"""VIDEODIT_CONDITIONING: what the text (and image) encoders hand to the sampler.

Text embeddings are padded the way the model family's text spec says (Wan: each prompt encoded
to its real length, then zero-padded to 512 tokens; the DiT's text embedding sees zeros for
padding). Image-to-video nodes return a copy with the image fields filled in; conditioning
objects are never mutated in place, because ComfyUI caches node outputs and may hand the same
object to several nodes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

FIRST_FRAMES_KEY = "first_frames"   # extras: normalised latent frames given clean at the start
VACE_KEY = "vace"                   # extras: a VaceInputs from VideoDiT VACE Conditioning


@dataclass(frozen=True)
class VideoDiTConditioning:
    positive: torch.Tensor                      # [B, L, D] float, padded per the text spec
    negative: torch.Tensor | None = None        # same shape, or None (cfg must then be 1)
    positive_text: str = ""
    negative_text: str = ""
    positive_tokens: int = 0                    # real (unpadded) token counts, EOS included
    negative_tokens: int = 0
    clip_features: torch.Tensor | None = None   # Wan 2.1 I2V/FLF2V: [B, 257|514, 1280]
    concat_latent: torch.Tensor | None = None   # Wan 2.1 I2V/FLF2V: mask + image latent channels
    extras: dict[str, Any] = field(default_factory=dict)   # FIRST_FRAMES_KEY, ...

    def replace(self, **changes) -> "VideoDiTConditioning":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class VaceInputs:
    """The VACE context (Wan 2.1 VACE, Wan 2.2 VACE-Fun) that VideoDiT VACE Conditioning makes.

    ``context`` is ``[1, C, T, h, w]`` at the latent's resolution: the VAE latents of the
    inactive (kept) and reactive (to regenerate) parts of the control video, normalised like
    the latent the model samples, followed by the mask folded to the latent grid (Wan 2.1 VAE:
    16 + 16 + 64 = 96 channels). ``T`` counts the reference-image frames first; the sampler
    trims them from its output, so the user never sees them.
    """
    context: torch.Tensor
    strength: float = 1.0
    reference_frames: int = 0   # latent frames at the start that hold reference images


@dataclass(frozen=True)
class ModelInputs:
    """What one model pass sees besides the latent and the noise level.

    The sampler builds one per pass (positive, negative) from a VideoDiTConditioning, already
    batched to the latent, keeping only the image forms the model takes (see ImageInputs).
    """
    text: torch.Tensor                          # [B, L, D]
    concat_latent: torch.Tensor | None = None   # extra input channels
    clip_features: torch.Tensor | None = None   # image tokens put before the text
    first_frames: int = 0                       # clean latent frames at the start (timestep 0)
    integer_timesteps: bool = True              # hand the network int(sigma * 1000)
    # Which guidance pass this is: "positive", "negative", or "both" (the two stacked on the
    # batch axis, positive first). Step caches keep one cache per branch.
    branch: str = "positive"
    vace_context: torch.Tensor | None = None    # VaceInputs.context, batched like the text
    vace_strength: float = 1.0                  # scale of the VACE hints
