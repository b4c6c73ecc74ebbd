"""Chunk colour seams: clips rendered in pieces jump in colour where the pieces meet.

At a seam (frame s starts the next piece; detected, or a given segment start) a per-channel
gain and offset is fitted by least squares between frame s-1 and frame s warped onto it (valid
pixels of the flow only, so moving content does not bias the fit), and applied to every frame
of the later piece up to the next cut or seam. Seams are handled left to right, so the first
piece is the colour anchor. Because one fit recolours the rest of the clip, it is guarded
against content that changed across the seam: outliers are refitted away, a gain that does
not explain the frame is dropped for a median offset, and where the flow pairs too little of
the frame only the whole frame's median change is used. Where the piece drifts back by
itself, the correction is released along it (:func:`_held_share`).
"""
from __future__ import annotations

import torch

from .flow import ClipFlows, warp


# Variance (0..1 units, ~3.6 code values of spread) that pulls a fitted gain toward 1: a flat
# area -- a plain background -- says nothing about gain and is matched by its offset alone.
GAIN_RIDGE = 2e-4
# Pixels whose first-fit residual is above this many robust sigmas are left out of the refit.
OUTLIER_SIGMAS = 3.0
# A gain is used only where it explains the frame: share of the reference's variance the fit
# accounts for (a colour seam on the same content: ~0.99; content that changed: far less).
MIN_GAIN_R2 = 0.9
# Share of the frame the flow must pair for a fit; on less (flat areas, changed content) the
# fit would be read from a few objects.
MIN_FLOW_SUPPORT = 0.2
# A chunk seam changes a channel by a few percent; a fitted gain beyond this says the frames
# show different content, and that gain would be applied to every later frame.
MAX_GAIN = 1.25


def fit_channel_affine(reference: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``gain, offset`` ([3]) minimising ``|gain * moving + offset - reference|^2``.

    Fitted twice: the second time without the pixels the first fit explains worst, which are
    content that changed rather than colour (a morphing object, an occlusion the flow missed).
    A channel whose fit still explains little of the reference gets no gain, only the median
    difference as offset: a seam's correction is applied to every later frame, so a gain read
    from changed content would tint the rest of the clip.
    """
    inside = mask.expand_as(reference)
    gain, offset = _least_squares(reference, moving, mask)
    residual = (gain.view(1, 3, 1, 1) * moving + offset.view(1, 3, 1, 1) - reference).abs()
    sigma = torch.stack([1.4826 * residual[:, c][inside[:, c]].median() for c in range(3)])
    inliers = mask & (residual <= OUTLIER_SIGMAS * sigma.clamp_min(1 / 255).view(1, 3, 1, 1)
                      ).all(dim=1, keepdim=True)
    if inliers.sum() >= 0.5 * mask.sum():
        gain, offset = _least_squares(reference, moving, inliers)
        inside = inliers.expand_as(reference)
    for c in range(3):
        ref, mov = reference[:, c][inside[:, c]], moving[:, c][inside[:, c]]
        explained = 1 - (gain[c] * mov + offset[c] - ref).pow(2).mean() / ref.var().clamp_min(1e-8)
        if explained < MIN_GAIN_R2:
            gain[c], offset[c] = 1.0, (ref - mov).median()
    return gain, offset


def _least_squares(reference: torch.Tensor, moving: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    m = mask.float().expand_as(reference)
    n = m.sum(dim=(0, 2, 3)).clamp_min(1.0)
    mx = (moving * m).sum(dim=(0, 2, 3)) / n
    my = (reference * m).sum(dim=(0, 2, 3)) / n
    cov = (((moving - mx.view(1, 3, 1, 1)) * (reference - my.view(1, 3, 1, 1))) * m).sum(dim=(0, 2, 3))
    var = (((moving - mx.view(1, 3, 1, 1)) ** 2) * m).sum(dim=(0, 2, 3))
    gain = ((cov + GAIN_RIDGE * n) / (var + GAIN_RIDGE * n)).clamp(1 / MAX_GAIN, MAX_GAIN)
    offset = my - gain * mx
    return gain, offset


def _held_share(piece: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``[N, 1, 1, 1]``: how much of a seam's correction each frame of the piece keeps.

    A generator often jumps at a join and then drifts back to the colour it prefers. Holding
    the correction over the whole piece would then push its end, and every later piece, away
    by the jump: corrections would add up into drift (on chained demo renders of 129 frames,
    from 2-6 dE to 15). So the correction is released linearly along the piece by the share of
    the jump the piece undoes by its last frame -- the whole-frame median change from its
    first to its last frame, measured along the correction: a lasting tint stays corrected, a
    jump the piece recovers from is only smoothed out.
    """
    first, last = piece[:1], piece[-1:]
    jump = ((first * gain + offset) - first).flatten(2).median(dim=2).values[0]
    change = (last - first).flatten(2).median(dim=2).values[0]
    size = float(jump.pow(2).sum())
    undone = 0.0 if size < 1e-8 else min(max(float((change * jump).sum()) / size, 0.0), 1.0)
    steps = torch.arange(piece.shape[0], device=piece.device) / max(piece.shape[0] - 1, 1)
    return (1 - undone * steps).view(-1, 1, 1, 1)


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
        if mask.float().mean() < MIN_FLOW_SUPPORT:
            # Too few pixels the flow can pair (flat or changed content) for a fit: offset by
            # the median change of the whole frame, which the unchanged majority decides.
            gain = torch.ones(3, device=device)
            offset = (ref - cur).flatten(2).median(dim=2).values[0]
            how = "whole-frame median"
        else:
            gain, offset = fit_channel_affine(ref, warp(cur, flow), mask)
            how = "flow-aligned fit"
        gain = 1 + strength * (gain - 1)
        offset = strength * offset
        g, o = gain.view(1, 3, 1, 1), offset.view(1, 3, 1, 1)
        held = _held_share(out[s:end].to(device, torch.float32), g, o)
        for i in range(s, end, 8):
            x = out[i:min(end, i + 8)].to(device, torch.float32)
            share = held[i - s:min(end, i + 8) - s]
            out[i:min(end, i + 8)] = (x + share * (x * g + o - x)).clamp(0, 1).to(out.dtype)
        fitted.append({"frame": s, "gain": [round(float(v), 4) for v in gain],
                       "offset": [round(float(v), 4) for v in offset], "from": how,
                       "held_at_end": round(float(held[-1]), 3)})
    return out, fitted
