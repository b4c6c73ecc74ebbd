"""Chunk colour seams: clips rendered in pieces jump in colour where the pieces meet.

At a detected seam (frame s starts the next piece) a per-channel gain and offset is fitted by
least squares between frame s-1 and frame s warped onto it (valid pixels of the flow only, so
moving content does not bias the fit), and applied to every frame of the later piece up to the
next cut or seam. Seams are handled left to right, so the first piece is the colour anchor.
"""
from __future__ import annotations

import torch

from .flow import ClipFlows, warp


def fit_channel_affine(reference: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``gain, offset`` ([3]) minimising ``|gain * moving + offset - reference|^2``."""
    m = mask.float().expand_as(reference)
    n = m.sum(dim=(0, 2, 3)).clamp_min(1.0)
    mx = (moving * m).sum(dim=(0, 2, 3)) / n
    my = (reference * m).sum(dim=(0, 2, 3)) / n
    cov = (((moving - mx.view(1, 3, 1, 1)) * (reference - my.view(1, 3, 1, 1))) * m).sum(dim=(0, 2, 3))
    var = (((moving - mx.view(1, 3, 1, 1)) ** 2) * m).sum(dim=(0, 2, 3))
    gain = (cov / var.clamp_min(1e-8)).clamp(0.5, 2.0)
    offset = my - gain * mx
    return gain, offset


def correct_seams(frames: torch.Tensor, flows: ClipFlows, seams: list[int], cuts: list[int], *,
                  strength: float = 1.0, device=None) -> tuple[torch.Tensor, list[dict]]:
    """Return the corrected clip and, per seam, the fitted gain/offset."""
    device = device if device is not None else frames.device
    t = frames.shape[0]
    out = frames.clone()
    fitted = []
    stops = sorted(set(seams) | set(cuts) | {t})
    for s in sorted(seams):
        if not 0 < s < t:
            continue
        end = min(x for x in stops if x > s)
        ref = out[s - 1:s].to(device, torch.float32)
        cur = out[s:s + 1].to(device, torch.float32)
        flow = flows.forward[s - 1:s].to(device, torch.float32)
        mask = flows.valid[s - 1:s].to(device)
        if mask.float().mean() < 0.05:  # nothing reliable to fit on: identity
            fitted.append({"frame": s, "gain": [1.0] * 3, "offset": [0.0] * 3, "skipped": True})
            continue
        gain, offset = fit_channel_affine(ref, warp(cur, flow), mask)
        gain = 1 + strength * (gain - 1)
        offset = strength * offset
        g, o = gain.view(1, 3, 1, 1), offset.view(1, 3, 1, 1)
        for i in range(s, end, 8):
            x = out[i:min(end, i + 8)].to(device, torch.float32)
            out[i:min(end, i + 8)] = (x * g + o).clamp(0, 1).to(out.dtype)
        fitted.append({"frame": s, "gain": [round(float(v), 4) for v in gain],
                       "offset": [round(float(v), 4) for v in offset], "skipped": False})
    return out, fitted
