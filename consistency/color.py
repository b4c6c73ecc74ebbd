"""Colour conversions used by the post-pass and the report (kornia, imported on first use)."""
from __future__ import annotations

import torch


def rgb_to_lab(frames: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` sRGB 0..1 -> CIE Lab (L 0..100, a/b roughly -128..127)."""
    from kornia.color import rgb_to_lab as _rgb_to_lab

    return _rgb_to_lab(frames.float().clamp(0, 1))


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab -> sRGB 0..1 (unclipped; callers clamp where they store)."""
    from kornia.color import lab_to_rgb as _lab_to_rgb

    return _lab_to_rgb(lab.float(), clip=False)


def frame_lab_means(frames: torch.Tensor, border: int = 0, chunk: int = 16) -> torch.Tensor:
    """Per-frame mean Lab ``[T, 3]`` over the frame minus ``border`` pixels each side."""
    out = []
    for start in range(0, frames.shape[0], chunk):
        lab = rgb_to_lab(crop_border(frames[start:start + chunk], border))
        out.append(lab.mean(dim=(2, 3)))
    return torch.cat(out)


def crop_border(x: torch.Tensor, border: int) -> torch.Tensor:
    if border <= 0:
        return x
    h, w = x.shape[-2:]
    b = min(border, (h - 1) // 2, (w - 1) // 2)
    return x[..., b:h - b, b:w - b] if b > 0 else x


def auto_border(h: int, w: int) -> int:
    """Edge pixels left out of statistics (VAE edge and tile seams): 8 px at 480p, less when small."""
    return int(max(1, min(16, round(min(h, w) / 60))))
