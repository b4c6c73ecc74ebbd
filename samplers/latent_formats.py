"""Latent formats of the Wan VAEs: channel count, strides, per-channel normalisation.

LATENT dicts hold *raw* VAE latents (as ComfyUI's native Wan VAE produces them) plus
``"latent_format": "wan21" | "wan22"`` so a mismatched VAE or model can be refused clearly.
The sampler normalises on the way in (``(z - mean) / std``) and back on the way out.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LATENT_FORMAT_KEY = "latent_format"


@dataclass(frozen=True)
class LatentFormat:
    name: str
    channels: int
    spatial_factor: int      # pixels per latent cell along H and W
    temporal_factor: int     # frames per latent frame after the first
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def latent_shape(self, batch: int, frames: int, height: int, width: int) -> tuple[int, ...]:
        return (batch, self.channels, (frames - 1) // self.temporal_factor + 1,
                height // self.spatial_factor, width // self.spatial_factor)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.channels) + (1,) * (like.ndim - 2)
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw VAE latent -> the space the DiT was trained in."""
        mean, std = self._stats(raw)
        return (raw - mean) / std

    def denormalize(self, model_space: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(model_space)
        return model_space * std + mean


WAN21 = LatentFormat(
    name="wan21", channels=16, spatial_factor=8, temporal_factor=4,
    mean=(-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
          0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921),
    std=(2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
         3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160),
)

# WAN22 (48 channels, 16x spatial) is added with the Wan 2.2 VAE; its statistics come from
# Wan2.2's wan/modules/vae2_2.py.
FORMATS: dict[str, LatentFormat] = {WAN21.name: WAN21}


def get_format(name: str) -> LatentFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown latent format {name!r}; known: {sorted(FORMATS)}") from None
