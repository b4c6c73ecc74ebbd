"""Shimmer: texture that boils from frame to frame although nothing moves that way.

A flow-guided recursive blend of the low band (Gaussian, ``band_sigma`` px) runs forward and
backward in time and the two are averaged, which cancels the lag a one-way blend has on fades.
Each blend step is weighted by the forward-backward validity mask and by how well the warped
previous result agrees with the current frame (``exp(-(diff / tau)^2)``), so occlusions, cuts
and real changes are left alone. High frequencies pass untouched unless ``full_band`` is set
(a full-band blend softens pans and is therefore opt-in).
"""
from __future__ import annotations

import torch

from ..core.hooks import NO_HOOKS, Hooks
from .flow import ClipFlows, gaussian_blur, warp


def _recursive_blend(low: torch.Tensor, flows: ClipFlows, a: int, b: int, *, forward: bool,
                     alpha: float, tau: float, device, hooks: Hooks) -> torch.Tensor:
    out = torch.empty_like(low[a:b])
    order = range(a, b) if forward else range(b - 1, a - 1, -1)
    prev = None
    for n, i in enumerate(order):
        if n % 8 == 0:
            hooks.check_interrupt()
        cur = low[i:i + 1].to(device, torch.float32)
        if prev is None:
            res = cur
        else:
            if forward:   # frame i -> i-1
                flow, valid = flows.backward[i - 1:i], flows.valid_back[i - 1:i]
            else:         # frame i -> i+1
                flow, valid = flows.forward[i:i + 1], flows.valid[i:i + 1]
            pw = warp(prev, flow.to(device, torch.float32))
            diff = (pw - cur).abs().mean(1, keepdim=True)
            weight = valid.to(device, torch.float32) * torch.exp(-(diff / tau) ** 2)
            res = cur + alpha * weight * (pw - cur)
        out[i - a:i - a + 1] = res.to(out.dtype)
        prev = res
    return out


def reduce_shimmer(frames: torch.Tensor, flows: ClipFlows, segments, *, alpha: float = 0.6,
                   band_sigma: float = 3.0, tau: float = 12 / 255, full_band: bool = False,
                   device=None, hooks: Hooks = NO_HOOKS) -> torch.Tensor:
    device = device if device is not None else frames.device
    out = frames.clone()
    for a, b in segments:
        if b - a < 2:
            continue
        seg = frames[a:b].to(device, torch.float32)
        low = seg if full_band else torch.cat([gaussian_blur(seg[i:i + 8], band_sigma)
                                               for i in range(0, b - a, 8)])
        shifted = ClipFlows(flows.forward[a:b - 1], flows.backward[a:b - 1],
                            flows.valid[a:b - 1], flows.valid_back[a:b - 1])
        fwd = _recursive_blend(low, shifted, 0, b - a, forward=True, alpha=alpha, tau=tau,
                               device=device, hooks=hooks)
        bwd = _recursive_blend(low, shifted, 0, b - a, forward=False, alpha=alpha, tau=tau,
                               device=device, hooks=hooks)
        smoothed = 0.5 * (fwd + bwd)
        out[a:b] = (seg + (smoothed - low)).clamp(0, 1).to(out.dtype)
    return out
