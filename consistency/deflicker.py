"""Global deflicker (per-frame Lab statistics) and local deflicker (low-frequency gain field).

Global: per shot, each frame's Lab mean (and L std) is pulled onto a temporally smoothed
version of itself. Smoothing uses odd (point-symmetric) extension at the ends, which keeps
linear ramps -- fades -- exactly, and a robust second pass, so single-frame pops do not leak
into their neighbours. Statistics are per RGB channel by default (mean and std: a per-channel
gain/offset, which is how decoder flicker behaves); ``space="lab"`` matches Lab means and L std. Corrections are applied as RGB deltas, so an unchanged frame round-trips
bit-exactly instead of through Lab and back.

Local: the heavily blurred luma of each frame is compared with that of its flow-aligned
neighbours; the ratio of their weighted mean to the frame's own is a smooth gain field that
evens out blotchy brightness changes and leaves detail untouched.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.hooks import NO_HOOKS, Hooks
from .color import lab_to_rgb, rgb_to_lab
from .flow import ClipFlows, compose, gaussian_blur, gaussian_kernel1d, to_grey, warp


def smooth_series(series: torch.Tensor, sigma: float, *, odd_extension: bool = True,
                  robust: bool = True) -> torch.Tensor:
    """Smooth ``[T, C]`` along T with a Gaussian; ends extended point-symmetrically or reflected.

    ``robust``: samples further than 3 robust std from a first pass (single-frame pops) are
    replaced by that pass and the series smoothed again, so a pop does not leak into its
    neighbours. (A 3-frame median would do the same but costs ~1 dB on ordinary jitter.)
    """
    s = series.double()
    if s.shape[0] < 3 or sigma <= 0:
        return s.to(series.dtype)
    first = _gaussian_pass(s, sigma, odd_extension)
    if robust and s.shape[0] >= 5:
        resid = s - first
        scale = 1.4826 * resid.abs().median(0, keepdim=True).values.clamp_min(1e-9)
        s = torch.where(resid.abs() > 3 * scale, first, s)
        first = _gaussian_pass(s, sigma, odd_extension)
    return first.to(series.dtype)


def _gaussian_pass(s: torch.Tensor, sigma: float, odd_extension: bool) -> torch.Tensor:
    t = s.shape[0]
    r = min(int(math.ceil(3 * sigma)), t - 1)
    k = gaussian_kernel1d(sigma, dtype=torch.float64)
    kr = k.numel() // 2
    if kr > r:  # short shot: truncate the kernel to the available extension
        k = k[kr - r:kr + r + 1]
        k = k / k.sum()
    ext = _extend(s, r, odd_extension)  # [T + 2r, C]
    return F.conv1d(ext.T.unsqueeze(1), k.view(1, 1, -1)).squeeze(1).T


def _extend(s: torch.Tensor, r: int, odd: bool) -> torch.Tensor:
    if r <= 0:
        return s
    left = s[1:r + 1].flip(0)
    right = s[-r - 1:-1].flip(0)
    if odd:  # point-symmetric about a robust end value: s[-k] = 2 s0 - s[k]
        left = 2 * _end_anchor(s, r) - left
        right = 2 * _end_anchor(s.flip(0), r) - right
    return torch.cat((left, s, right), 0)


def _end_anchor(s: torch.Tensor, r: int) -> torch.Tensor:
    """Value at index 0 of a straight line fitted to the first r+1 samples.

    Exact on linear ramps (fades stay fades) but far less noisy than the raw first sample,
    which an odd extension would otherwise copy into every smoothed value near the end.
    """
    n = min(s.shape[0], r + 1)
    if n < 3:
        return s[:1]
    x = torch.arange(n, dtype=s.dtype)
    xm = x.mean()
    y = s[:n]
    ym = y.mean(0, keepdim=True)
    slope = ((x - xm).unsqueeze(1) * (y - ym)).sum(0, keepdim=True) / ((x - xm) ** 2).sum()
    return ym - slope * xm


def _to_space(x: torch.Tensor, space: str) -> torch.Tensor:
    return rgb_to_lab(x) if space == "lab" else x.float()


def _from_space(x: torch.Tensor, space: str) -> torch.Tensor:
    return lab_to_rgb(x) if space == "lab" else x


def _lab_stats(frames: torch.Tensor, chunk: int, device, space: str = "lab"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    means, stds = [], []
    for i in range(0, frames.shape[0], chunk):
        lab = _to_space(frames[i:i + chunk].to(device), space)
        means.append(lab.mean(dim=(2, 3)).cpu())
        stds.append(lab.std(dim=(2, 3)).cpu())
    return torch.cat(means), torch.cat(stds)


def global_deflicker(frames: torch.Tensor, segments, *, strength: float = 1.0,
                     sigma: float = 4.0, protect_fades: bool = True, chunk: int = 8,
                     space: str = "rgb", device=None, hooks: Hooks = NO_HOOKS
                     ) -> torch.Tensor:
    """Match each frame's Lab mean / L std to their temporally smoothed values (per shot)."""
    device = device if device is not None else frames.device
    mean, std = _lab_stats(frames, chunk, device, space)
    target_mean = mean.clone()
    target_std = std.clone()
    for a, b in segments:
        if b - a < 3:
            continue
        target_mean[a:b] = smooth_series(mean[a:b], sigma, odd_extension=protect_fades)
        log_std = smooth_series(std[a:b].clamp_min(1e-3).log(), sigma,
                                odd_extension=protect_fades)
        target_std[a:b] = log_std.exp()
    # Only L gets its contrast matched; chroma spread is content, its mean is the flicker.
    ratio = (target_std / std.clamp_min(1e-3)).clamp(0.8, 1.25)
    if space == "lab":
        ratio[:, 1:] = 1.0
    out = frames.clone()
    for i in range(0, frames.shape[0], chunk):
        hooks.check_interrupt()
        x = frames[i:i + chunk].to(device, torch.float32)
        lab = _to_space(x, space)
        m = mean[i:i + chunk].to(device).view(-1, 3, 1, 1)
        tm = target_mean[i:i + chunk].to(device).view(-1, 3, 1, 1)
        rt = ratio[i:i + chunk].to(device).view(-1, 3, 1, 1)
        corrected = (lab - m) * rt + tm
        delta = _from_space(corrected, space) - _from_space(lab, space)
        out[i:i + chunk] = (x + strength * delta).clamp(0, 1).to(out.dtype)
    return out


def _neighbour_flow(flows: ClipFlows, t: int, k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow t -> t+k (k != 0) chained through consecutive pairs, and its validity mask."""
    step = 1 if k > 0 else -1
    flow = None
    mask = None
    cur = t
    for _ in range(abs(k)):
        if step > 0:
            f, v = flows.forward[cur:cur + 1], flows.valid[cur:cur + 1]
        else:
            f, v = flows.backward[cur - 1:cur], flows.valid_back[cur - 1:cur]
        f = f.to(device, torch.float32)
        v = v.to(device, torch.float32)
        if flow is None:
            flow, mask = f, v
        else:
            mask = mask * (warp(v, flow) > 0.99).float()
            flow = compose(flow, f)
        cur += step
    return flow, mask


def local_deflicker(frames: torch.Tensor, flows: ClipFlows, segments, *, strength: float = 1.0,
                    radius: int = 2, time_sigma: float = 2.0, iterations: int = 2,
                    device=None, hooks: Hooks = NO_HOOKS) -> torch.Tensor:
    """Even out blotchy brightness changes with a smooth gain field toward aligned neighbours."""
    device = device if device is not None else frames.device
    t, _, h, w = frames.shape
    # The gain field is smooth, so it is estimated at reduced resolution.
    factor = max(1, min(h, w) // 64)
    hs, ws = h // factor, w // factor
    sigma_s = max(2.0, min(hs, ws) / 20.0)
    eps = 0.02
    out = frames.clone()
    small_flows = ClipFlows(
        forward=F.interpolate(flows.forward.float(), size=(hs, ws), mode="area") / factor,
        backward=F.interpolate(flows.backward.float(), size=(hs, ws), mode="area") / factor,
        valid=F.interpolate(flows.valid.float(), size=(hs, ws), mode="area") > 0.99,
        valid_back=F.interpolate(flows.valid_back.float(), size=(hs, ws), mode="area") > 0.99)
    for _ in range(max(1, iterations)):
        lows = []
        for i in range(0, t, 16):
            g = to_grey(out[i:i + 16].to(device, torch.float32))
            lows.append(gaussian_blur(F.interpolate(g, size=(hs, ws), mode="area"), sigma_s))
        low = torch.cat(lows)
        for a, b in segments:
            for i in range(a, b):
                if (i - a) % 8 == 0:
                    hooks.check_interrupt()
                num = low[i:i + 1].clone()
                den = torch.ones_like(num)
                for k in range(-radius, radius + 1):
                    j = i + k
                    # Symmetric neighbours only: a one-sided average would bend fades and
                    # other linear ramps at the ends of a shot.
                    if k == 0 or i - abs(k) < a or i + abs(k) >= b:
                        continue
                    flow, mask = _neighbour_flow(small_flows, i, k, device)
                    wk = math.exp(-0.5 * (k / time_sigma) ** 2)
                    num += wk * mask * warp(low[j:j + 1], flow)
                    den += wk * mask
                target = num / den
                gain = gaussian_blur((target + eps) / (low[i:i + 1] + eps), sigma_s / 2)
                gain = gain.clamp(0.7, 1.4)
                gain = F.interpolate(gain, size=(h, w), mode="bilinear", align_corners=False)
                x = out[i:i + 1].to(device, torch.float32)
                out[i:i + 1] = (x * (1 + strength * (gain - 1))).clamp(0, 1).to(out.dtype)
    return out
