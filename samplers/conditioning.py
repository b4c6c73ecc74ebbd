"""VIDEODIT_CONDITIONING: what the text (and image) encoders hand to the sampler.

Text embeddings follow Wan: each prompt is encoded to its real length, then zero-padded to
``TEXT_LEN`` tokens (the DiT's text embedding sees zeros for padding). Image-to-video nodes
return a copy with the image fields filled in; conditioning objects are never mutated in place,
because ComfyUI caches node outputs and may hand the same object to several nodes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

TEXT_LEN = 512


@dataclass(frozen=True)
class VideoDiTConditioning:
    positive: torch.Tensor                      # [B, TEXT_LEN, D] float, zero-padded
    negative: torch.Tensor | None = None        # same shape, or None (cfg must then be 1)
    positive_text: str = ""
    negative_text: str = ""
    positive_tokens: int = 0                    # real (unpadded) token counts, EOS included
    negative_tokens: int = 0
    clip_features: torch.Tensor | None = None   # Wan 2.1 I2V/FLF2V: [B, 257|514, 1280]
    concat_latent: torch.Tensor | None = None   # Wan 2.1 I2V/FLF2V: mask + image latent channels
    extras: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes) -> "VideoDiTConditioning":
        return dataclasses.replace(self, **changes)
