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

# Wan 2.2 VAE (TI2V-5B): 48 channels, 16x spatial (2x2 patchify inside the VAE), 4x temporal.
# Statistics as published with Wan2.2 (wan/modules/vae2_2.py) and in ComfyUI's ``Wan22``.
WAN22 = LatentFormat(
    name="wan22", channels=48, spatial_factor=16, temporal_factor=4,
    mean=(-0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
          -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
          -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
          -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
          -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
          0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667),
    std=(0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
         0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
         0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
         0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
         0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
         0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744),
)

FORMATS: dict[str, LatentFormat] = {WAN21.name: WAN21, WAN22.name: WAN22}


def get_format(name: str) -> LatentFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown latent format {name!r}; known: {sorted(FORMATS)}") from None
