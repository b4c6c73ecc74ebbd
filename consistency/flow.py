"""Dense optical flow without learned weights: coarse-to-fine Lucas–Kanade in plain torch.

kornia has no dense flow, and learned estimators need weights, so this is a classical
estimator: per-frame mean/std-normalised grey (so a gain or colour flicker between the two
frames does not read as motion), a Gaussian pyramid, and at each level a few warp-and-solve
passes of the Gaussian-windowed Lucas–Kanade 2x2 system. It runs batched on CPU and GPU.

Flow convention: ``flow[:, 0]`` is the x (column) and ``flow[:, 1]`` the y (row) displacement
in pixels, such that ``warp(target, flow)`` samples ``target`` at ``p + flow(p)`` and lines it
up with the source frame. Flows are computed in fp32 and may be stored in fp16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.hooks import NO_HOOKS, Hooks

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Intensity scale for the normalised grey: LK's regulariser is tuned for ~0..255 code values.
_GREY_SCALE = 48.0


def gaussian_kernel1d(sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with replicate borders."""
    if sigma <= 0:
        return x
    b, c, h, w = x.shape
    factor = int(sigma // 8)
    if factor >= 2 and min(h, w) >= 8 * factor:
        # Wide blurs (shading removal, gain fields) only keep low frequencies: blur a reduced
        # copy and interpolate back instead of running a 6-sigma kernel at full resolution.
        small = F.avg_pool2d(x, factor, ceil_mode=True)
        small = gaussian_blur(small, math.sqrt(max(sigma ** 2 / factor ** 2 - 0.25, 0.25)))
        return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    k = gaussian_kernel1d(sigma, x.device, x.dtype)
    r = k.numel() // 2
    y = x.reshape(b * c, 1, h, w)
    # Reflect needs pad < size; fall back to replicate for tiny pyramid levels.
    mode = "reflect" if r < min(h, w) else "replicate"
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def to_grey(frames: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` RGB 0..1 -> ``[B, 1, H, W]`` Rec.601 luma."""
    w = torch.tensor(LUMA_WEIGHTS, device=frames.device, dtype=frames.dtype).view(1, 3, 1, 1)
    return (frames * w).sum(1, keepdim=True)


def normalised_grey(frames: torch.Tensor) -> torch.Tensor:
    """Grey with zero mean and unit std per frame, so brightness constancy survives flicker."""
    g = to_grey(frames.float())
    mean = g.mean(dim=(1, 2, 3), keepdim=True)
    std = g.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-4)
    return (g - mean) / std * _GREY_SCALE


def flow_grey(frames: torch.Tensor) -> torch.Tensor:
    """What the flow solver compares: log grey with its large-scale shading removed.

    Dividing out a broad blur (a subtraction in log space) cancels brightness changes that are
    smooth in space -- global gain, fades and local flicker blobs -- which would otherwise read
    as motion; then zero mean and unit std per frame, on a ~0..255-like scale.
    """
    g = torch.log(to_grey(frames.float()).clamp_min(0) + 0.02)
    h, w = g.shape[-2:]
    g = g - gaussian_blur(g, max(2.0, min(h, w) / 12.0))
    mean = g.mean(dim=(1, 2, 3), keepdim=True)
    std = g.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-4)
    return (g - mean) / std * _GREY_SCALE


def base_grid(h: int, w: int, device, dtype=torch.float32) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                            torch.arange(w, device=device, dtype=dtype), indexing="ij")
    return torch.stack((xs, ys), 0).unsqueeze(0)  # [1, 2, H, W]


def warp(image: torch.Tensor, flow: torch.Tensor, *, return_valid: bool = False,
         mode: str = "bilinear"):
    """Sample ``image`` at ``p + flow(p)`` (bilinear, border padding).

    With ``return_valid`` also return ``[B, 1, H, W]`` True where the sample fell inside the frame.
    """
    b, _, h, w = image.shape
    flow = flow.to(image.dtype) if image.dtype.is_floating_point else flow.float()
    pos = base_grid(h, w, image.device, flow.dtype) + flow
    gx = pos[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = pos[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), -1)
    out = F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)
    if not return_valid:
        return out
    valid = ((pos[:, 0] >= 0) & (pos[:, 0] <= w - 1) & (pos[:, 1] >= 0) & (pos[:, 1] <= h - 1))
    return out, valid.unsqueeze(1)


def _gradients(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences with replicated borders."""
    p = F.pad(img, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (p[:, :, 1:-1, 2:] - p[:, :, 1:-1, :-2])
    gy = 0.5 * (p[:, :, 2:, 1:-1] - p[:, :, :-2, 1:-1])
    return gx, gy


@dataclass(frozen=True)
class FlowSettings:
    """Coarse-to-fine Lucas–Kanade parameters (defaults reach < 0.1 px on affine warps)."""
    window_sigma: float = 4.5      # Gaussian LK window (px at each level)
    presmooth_sigma: float = 0.8   # blur before differentiating (noise, aliasing)
    warps_per_level: int = 4
    min_level_size: int = 16       # coarsest level's short side (px)
    max_levels: int = 6
    regulariser: float = 1e-2      # Tikhonov on the 2x2 system (units of grey^2, ~0..255 scale)
    final_smooth_sigma: float = 1.5  # light flow smoothing after each level's solve
    # Bicubic resampling inside the solver: bilinear blurs the warped frame and biases the
    # fixed point toward whole pixels ("pixel locking") by ~0.1 px on fine texture.
    interpolation: str = "bicubic"

    def levels_for(self, h: int, w: int) -> int:
        n = 1
        while n < self.max_levels and min(h, w) / (2 ** n) >= self.min_level_size:
            n += 1
        return n


def _pyramid(img: torch.Tensor, levels: int) -> list[torch.Tensor]:
    pyr = [img]
    for _ in range(levels - 1):
        pyr.append(F.avg_pool2d(gaussian_blur(pyr[-1], 1.0), 2, ceil_mode=True))
    return pyr


def _upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h0, w0 = flow.shape[-2:]
    up = F.interpolate(flow, size=size, mode="bilinear", align_corners=True)
    sx = (size[1] - 1) / max(w0 - 1, 1)
    sy = (size[0] - 1) / max(h0 - 1, 1)
    return up * torch.tensor([sx, sy], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)


def estimate_flow(source: torch.Tensor, target: torch.Tensor,
                  settings: FlowSettings = FlowSettings()) -> torch.Tensor:
    """Flow ``[B, 2, H, W]`` (fp32) from RGB ``source`` to ``target`` frames ``[B, 3, H, W]``.

    ``warp(target, flow)`` approximates ``source``.
    """
    if source.shape != target.shape or source.dim() != 4:
        raise ValueError(f"source and target must be equal [B,3,H,W]; got {tuple(source.shape)}"
                         f" and {tuple(target.shape)}")
    g0 = gaussian_blur(flow_grey(source), settings.presmooth_sigma)
    g1 = gaussian_blur(flow_grey(target), settings.presmooth_sigma)
    levels = settings.levels_for(*g0.shape[-2:])
    p0, p1 = _pyramid(g0, levels), _pyramid(g1, levels)
    flow = torch.zeros(g0.shape[0], 2, *p0[-1].shape[-2:], device=g0.device)
    for level in range(levels - 1, -1, -1):
        i0, i1 = p0[level], p1[level]
        if flow.shape[-2:] != i0.shape[-2:]:
            flow = _upsample_flow(flow, i0.shape[-2:])
        for _ in range(settings.warps_per_level):
            i1w = warp(i1, flow, mode=settings.interpolation)
            gx, gy = _gradients(0.5 * (i0 + i1w))
            it = i1w - i0
            s = settings.window_sigma
            sxx = gaussian_blur(gx * gx, s)
            sxy = gaussian_blur(gx * gy, s)
            syy = gaussian_blur(gy * gy, s)
            sxt = gaussian_blur(gx * it, s)
            syt = gaussian_blur(gy * it, s)
            reg = settings.regulariser
            a, b, d = sxx + reg, sxy, syy + reg
            det = a * d - b * b
            du = -(d * sxt - b * syt) / det
            dv = -(a * syt - b * sxt) / det
            flow = flow + torch.cat((du, dv), 1)
        if settings.final_smooth_sigma > 0:
            flow = gaussian_blur(flow, settings.final_smooth_sigma)
    return flow


def occlusion_mask(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` bool, True where ``forward`` (t->t+1) is trustworthy.

    Forward-backward consistency and motion-boundary tests of Ruder et al. (2016), plus
    samples that leave the frame.
    """
    forward = forward.float()
    backward = backward.float()
    back_warped, inside = warp(backward, forward, return_valid=True)
    sum_sq = ((forward + back_warped) ** 2).sum(1, keepdim=True)
    mag = (forward ** 2).sum(1, keepdim=True) + (back_warped ** 2).sum(1, keepdim=True)
    occluded = sum_sq > 0.01 * mag + 0.5
    ux_x, ux_y = _gradients(forward[:, :1])
    uy_x, uy_y = _gradients(forward[:, 1:])
    grad_sq = ux_x ** 2 + ux_y ** 2 + uy_x ** 2 + uy_y ** 2
    # Ruder et al. use + 0.002 for variational flow; windowed LK flow is noisier (texture noise
    # alone gives |grad F|^2 ~ 0.005), so the absolute term is 0.02 here.
    boundary = grad_sq > 0.01 * (forward ** 2).sum(1, keepdim=True) + 0.02
    return inside & ~occluded & ~boundary


@dataclass
class ClipFlows:
    """Consecutive-pair flows of a clip, stored fp16 on the clip's device.

    ``forward[t]`` maps frame t to t+1, ``backward[t]`` maps t+1 to t, ``valid[t]`` masks
    ``forward[t]`` and ``valid_back[t]`` masks ``backward[t]``.
    """
    forward: torch.Tensor     # [T-1, 2, H, W] fp16
    backward: torch.Tensor    # [T-1, 2, H, W] fp16
    valid: torch.Tensor       # [T-1, 1, H, W] bool
    valid_back: torch.Tensor  # [T-1, 1, H, W] bool

    @property
    def pairs(self) -> int:
        return self.forward.shape[0]


def clip_flows(frames: torch.Tensor, *, chunk_pairs: int = 8, device=None,
               settings: FlowSettings = FlowSettings(), progress_desc: str = "optical flow",
               hooks: Hooks = NO_HOOKS) -> ClipFlows:
    """Forward/backward flows and masks for all consecutive pairs of ``[T, 3, H, W]`` frames.

    Pairs are processed ``chunk_pairs`` at a time (memory stays bounded at 480p and above);
    ``hooks`` shows one progress step per chunk and is asked about Cancel between chunks.
    """
    t, _, h, w = frames.shape
    store = frames.device
    device = torch.device(device) if device is not None else frames.device
    n = max(t - 1, 0)
    fwd = torch.zeros(n, 2, h, w, dtype=torch.float16, device=store)
    bwd = torch.zeros_like(fwd)
    val = torch.zeros(n, 1, h, w, dtype=torch.bool, device=store)
    val_b = torch.zeros_like(val)
    chunk_pairs = max(1, int(chunk_pairs))
    with hooks.progress(max(1, math.ceil(n / chunk_pairs)), progress_desc) as bar:
        for start in range(0, n, chunk_pairs):
            hooks.check_interrupt()
            stop = min(n, start + chunk_pairs)
            a = frames[start:stop].to(device, torch.float32)
            b = frames[start + 1:stop + 1].to(device, torch.float32)
            both = estimate_flow(torch.cat((a, b)), torch.cat((b, a)), settings)
            f, bk = both[: stop - start], both[stop - start:]
            fwd[start:stop] = f.to(store, torch.float16)
            bwd[start:stop] = bk.to(store, torch.float16)
            val[start:stop] = occlusion_mask(f, bk).to(store)
            val_b[start:stop] = occlusion_mask(bk, f).to(store)
            bar.update(1)
    return ClipFlows(fwd, bwd, val, val_b)


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Flow of applying ``first`` (a->b) then ``second`` (b->c): a->c."""
    return first.float() + warp(second.float(), first.float())
