"""Synthetic clips with known ground truth, for tests and benchmarks.

A clip is a textured background seen by a camera (static, panning, jittering), optionally a
rigid textured object moving across it, fades and hard cuts. Artefacts are injected on top of
the clean clip, so every repair can be scored against the clean frames.
All frames are ``[T, 3, H, W]`` float32 0..1 (torch layout; nodes convert to ``[T, H, W, 3]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .flow import base_grid, gaussian_blur


def texture(h: int, w: int, *, generator: torch.Generator, scales=(1.5, 4.0, 10.0),
            base=(0.45, 0.4, 0.35), amplitude: float = 0.18) -> torch.Tensor:
    """Smooth multi-scale colour noise ``[1, 3, H, W]`` in 0..1 (band-limited, so flow works)."""
    out = torch.zeros(1, 3, h, w)
    for i, s in enumerate(scales):
        n = gaussian_blur(torch.randn(1, 3, h, w, generator=generator), s)
        n = n / n.std().clamp_min(1e-6)
        out += n * (amplitude / len(scales)) * (1.0 + 0.5 * i)
    base_t = torch.tensor(base).view(1, 3, 1, 1)
    return (base_t + out).clamp(0.02, 0.98)


def _sample(image: torch.Tensor, x0: float, y0: float, h: int, w: int,
            scale: float = 1.0) -> torch.Tensor:
    """Crop ``[1, 3, h, w]`` from ``image`` at sub-pixel top-left ``(x0, y0)``."""
    grid = base_grid(h, w, image.device) * scale
    grid[:, 0] += x0
    grid[:, 1] += y0
    H, W = image.shape[-2:]
    gx = grid[:, 0] * (2.0 / (W - 1)) - 1
    gy = grid[:, 1] * (2.0 / (H - 1)) - 1
    return F.grid_sample(image, torch.stack((gx, gy), -1), mode="bicubic",
                         padding_mode="border", align_corners=True)


@dataclass
class ClipSpec:
    """What the clean clip shows."""
    frames: int = 16
    height: int = 64
    width: int = 96
    pan: tuple[float, float] = (0.0, 0.0)        # camera motion (px per frame, x and y)
    object_speed: tuple[float, float] = (0.0, 0.0)  # moving object (px per frame); 0 = no object
    object_size: float = 0.3                     # side as a fraction of the short side
    fade: tuple[float, float] | None = None      # brightness multiplier at first and last frame
    cut_at: int | None = None                    # first frame of a second, unrelated shot
    jitter: float = 0.0                          # camera shake (px std per frame)
    seed: int = 0


def clean_clip(spec: ClipSpec) -> torch.Tensor:
    g = torch.Generator().manual_seed(spec.seed)
    t, h, w = spec.frames, spec.height, spec.width
    margin = int(abs(spec.pan[0]) * t + abs(spec.pan[1]) * t + 4 * spec.jitter + 8)
    backgrounds = [texture(h + 2 * margin, w + 2 * margin, generator=g)]
    if spec.cut_at is not None:
        backgrounds.append(texture(h + 2 * margin, w + 2 * margin, generator=g,
                                   base=(0.3, 0.45, 0.55)))
    side = max(4, int(spec.object_size * min(h, w)))
    obj = texture(side, side, generator=g, base=(0.75, 0.3, 0.25), scales=(2.0, 4.0))
    shake = torch.randn(t, 2, generator=g) * spec.jitter
    frames = []
    for i in range(t):
        shot = 1 if spec.cut_at is not None and i >= spec.cut_at else 0
        x0 = margin + spec.pan[0] * i + float(shake[i, 0])
        y0 = margin + spec.pan[1] * i + float(shake[i, 1])
        frame = _sample(backgrounds[shot], x0, y0, h, w)
        if shot == 0 and spec.object_speed != (0.0, 0.0):
            ox = w * 0.2 + spec.object_speed[0] * i
            oy = (h - side) / 2 + spec.object_speed[1] * i
            grid = base_grid(h, w, frame.device)
            u = grid[:, 0] - ox
            v = grid[:, 1] - oy
            # Anti-aliased square: partial coverage on the edge pixels, so motion is sub-pixel.
            cover = ((u + 0.5).clamp(0, 1) * (side - 0.5 - u).clamp(0, 1)
                     * (v + 0.5).clamp(0, 1) * (side - 0.5 - v).clamp(0, 1))
            # Soft edge: a hard one would be sharper at whole-pixel positions (pumping).
            cover = gaussian_blur(cover.unsqueeze(1), 1.0).squeeze(1)
            ug = (u * (2.0 / (side - 1)) - 1).clamp(-1, 1)
            vg = (v * (2.0 / (side - 1)) - 1).clamp(-1, 1)
            obj_pix = F.grid_sample(obj, torch.stack((ug, vg), -1), mode="bicubic",
                                    padding_mode="border", align_corners=True)
            frame = frame * (1 - cover.unsqueeze(1)) + obj_pix * cover.unsqueeze(1)
        if spec.fade is not None:
            a = spec.fade[0] + (spec.fade[1] - spec.fade[0]) * i / max(t - 1, 1)
            frame = frame * a
        frames.append(frame)
    return torch.cat(frames).clamp(0, 1)


# ---- artefacts (each returns a new tensor; ``amount`` is relative unless stated) ----

def global_flicker(clip: torch.Tensor, amount: float = 0.05, seed: int = 1) -> torch.Tensor:
    """iid per-frame brightness gain ``1 + amount * N(0,1)``."""
    g = torch.Generator().manual_seed(seed)
    gain = 1 + amount * torch.randn(clip.shape[0], 1, 1, 1, generator=g)
    return (clip * gain).clamp(0, 1)


def colour_flicker(clip: torch.Tensor, amount: float = 0.035, seed: int = 2) -> torch.Tensor:
    """iid per-frame, per-channel gain (a white-balance wobble)."""
    g = torch.Generator().manual_seed(seed)
    gain = 1 + amount * torch.randn(clip.shape[0], 3, 1, 1, generator=g)
    return (clip * gain).clamp(0, 1)


def local_flicker(clip: torch.Tensor, amount: float = 0.08, seed: int = 3,
                  scale: float = 0.5) -> torch.Tensor:
    """A smooth per-frame gain field (blobs ``scale`` x the short side) that changes every frame."""
    g = torch.Generator().manual_seed(seed)
    t, _, h, w = clip.shape
    sigma = scale * min(h, w) / 2
    field_ = gaussian_blur(torch.randn(t, 1, h, w, generator=g), sigma)
    field_ = field_ / field_.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (clip * (1 + amount * field_)).clamp(0, 1)


def drift(clip: torch.Tensor, delta=(0.06, 0.0, -0.06)) -> torch.Tensor:
    """A slow linear colour shift reaching ``delta`` (RGB, 0..1) at the last frame."""
    t = clip.shape[0]
    ramp = torch.linspace(0, 1, t).view(t, 1, 1, 1)
    return (clip + ramp * torch.tensor(delta).view(1, 3, 1, 1)).clamp(0, 1)


def chunk_seam(clip: torch.Tensor, at: int, gain=(1.08, 0.97, 0.92),
               offset=(0.01, 0.0, -0.01)) -> torch.Tensor:
    """Frames from ``at`` on get a per-channel gain/offset, as if rendered in a second chunk."""
    out = clip.clone()
    g = torch.tensor(gain).view(1, 3, 1, 1)
    o = torch.tensor(offset).view(1, 3, 1, 1)
    out[at:] = (out[at:] * g + o).clamp(0, 1)
    return out


def shimmer(clip: torch.Tensor, amount: float = 4 / 255, seed: int = 4,
            sigma: float = 3.0) -> torch.Tensor:
    """Temporally independent low-frequency texture noise ("boiling"), std ``amount``."""
    g = torch.Generator().manual_seed(seed)
    noise = gaussian_blur(torch.randn(clip.shape, generator=g), sigma)
    noise = noise / noise.std().clamp_min(1e-6) * amount
    return (clip + noise).clamp(0, 1)


def freeze(clip: torch.Tensor) -> torch.Tensor:
    """Every frame equal to the first: the clip that must not pass as video."""
    return clip[:1].expand_as(clip).clone()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 99.0 if mse <= 1e-12 else 10 * math.log10(1.0 / mse)


@dataclass
class Case:
    """A named synthetic case: clean ground truth and the artefacted clip."""
    name: str
    clean: torch.Tensor
    damaged: torch.Tensor
    notes: dict = field(default_factory=dict)
