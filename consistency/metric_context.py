"""What the consistency metrics share, computed once per clip.

Shots, per-frame luma and Lab means need only the frames; the motion metrics also share the
flows and one pass over motion-compensated pairs that measures every per-pair error at once
(warping is the expensive part, and chunking keeps memory bounded at 480p and above).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.hooks import Hooks
from .color import auto_border, crop_border, frame_lab_means
from .cuts import Boundaries, detect_boundaries
from .flow import ClipFlows, clip_flows, to_grey, warp


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-batch mean of ``x`` [B,C,H,W] over ``mask`` [B,1,H,W] (NaN where empty)."""
    m = mask.to(x.dtype).expand_as(x)
    den = m.sum(dim=(1, 2, 3))
    return (x * m).sum(dim=(1, 2, 3)) / den.where(den > 0, torch.full_like(den, float("nan")))


def _border_mask(h: int, w: int, border: int, device) -> torch.Tensor:
    m = torch.zeros(1, 1, h, w, dtype=torch.bool, device=device)
    b = min(border, (h - 1) // 2, (w - 1) // 2)
    m[..., b:h - b, b:w - b] = True
    return m


def _luma_jumps(luma: torch.Tensor, cuts: list[int]) -> torch.Tensor:
    """``[T]`` |2nd difference| of mean luma: where brightness flicker shows, frame by frame."""
    t = luma.shape[0]
    d2 = torch.zeros(t)
    if t >= 3:
        d2[1:-1] = (luma[2:] - 2 * luma[1:-1] + luma[:-2]).abs()
        for c in cuts:  # a cut is not flicker
            d2[max(c - 1, 0):min(c + 1, t)] = 0
    return d2


@dataclass
class AlignedPairs:
    """A chunk of consecutive pairs (t, t+1) with frame t+1 warped onto t, in code values."""
    a: torch.Tensor          # [N, 3, H, W] frames t
    b: torch.Tensor          # [N, 3, H, W] frames t+1
    b_warped: torch.Tensor   # frames t+1 sampled along the forward flow: lined up with ``a``
    forward: torch.Tensor    # [N, 2, H, W] flow t -> t+1
    valid: torch.Tensor      # [N, 1, H, W] forward flow trustworthy, inside the border
    still: torch.Tensor      # valid, and under half a pixel of motion both ways


def _aligned_pairs(frames: torch.Tensor, flows: ClipFlows, inner: torch.Tensor, start: int,
                   stop: int, device) -> AlignedPairs:
    a = frames[start:stop].to(device, torch.float32) * 255.0
    b = frames[start + 1:stop + 1].to(device, torch.float32) * 255.0
    fwd = flows.forward[start:stop].to(device, torch.float32)
    bwd = flows.backward[start:stop].to(device, torch.float32)
    valid = flows.valid[start:stop].to(device) & inner
    still = valid & (fwd.norm(dim=1, keepdim=True) < 0.5) & (bwd.norm(dim=1, keepdim=True) < 0.5)
    return AlignedPairs(a, b, warp(b, fwd), fwd, valid, still)


def warp_errors(p: AlignedPairs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair (mean |a - b_warped|, mean (a - b_warped)^2) over valid pixels."""
    diff = (p.a - p.b_warped).abs()
    return masked_mean(diff, p.valid), masked_mean(diff ** 2, p.valid)


def gain_compensated_error(p: AlignedPairs) -> torch.Tensor:
    """Per pair warp error after the least-squares gain from b_warped to a.

    The gain absorbs brightness flicker, so what is left is texture that changes along the
    motion: boiling or morphing.
    """
    m = p.valid.to(p.a.dtype)
    gain = (p.b_warped * p.a * m).sum(dim=(2, 3), keepdim=True) / \
        (p.b_warped * p.b_warped * m).sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return masked_mean((gain * p.b_warped - p.a).abs(), p.valid)


def aligned_ssim(p: AlignedPairs) -> torch.Tensor:
    """Per pair SSIM (11 px window, grey) of b_warped against a over valid pixels."""
    from kornia.metrics import ssim  # kornia is slow to import; only the report needs it

    smap = ssim(to_grey(p.b_warped / 255.0), to_grey(p.a / 255.0), 11)
    return masked_mean(smap, p.valid)


def static_error(p: AlignedPairs) -> torch.Tensor:
    """Per pair mean |b - a| over still pixels: no warp, so nothing but change is measured."""
    return masked_mean((p.b - p.a).abs(), p.still)


def colour_shift(p: AlignedPairs) -> torch.Tensor:
    """Per pair and RGB channel, median of (b_warped - a) over valid pixels ``[N, 3]``.

    The same surfaces seen in both frames, so a pan to differently coloured content does not
    count: only the clip's rendering of colour changed (NaN where nothing is valid). The
    median, not the mean: pixels that change for other reasons (a morphing object, an
    occlusion edge the flow misses) are a minority, and any bias they left would add up when
    the shifts are summed over a clip.
    """
    diff = p.b_warped - p.a
    out = torch.full((diff.shape[0], 3), float("nan"), device=diff.device)
    for i in range(diff.shape[0]):
        valid = p.valid[i, 0]
        if valid.any():
            out[i] = diff[i][:, valid].median(dim=1).values
    return out


def top5_flow(flow: torch.Tensor) -> torch.Tensor:
    """Per pair mean of the largest 5 % flow magnitudes (px), VBench's measure of motion."""
    mag = flow.norm(dim=1).flatten(1)
    k = max(1, int(0.05 * mag.shape[1]))
    return mag.topk(k, dim=1).values.mean(1)


@dataclass
class PairSeries:
    """Per-pair measurements ``[T-1]`` of the whole clip; errors are NaN on pairs across a cut."""
    warp_abs: torch.Tensor       # :func:`warp_errors`
    warp_sq: torch.Tensor
    struct_abs: torch.Tensor     # :func:`gain_compensated_error`
    ssim: torch.Tensor           # :func:`aligned_ssim`
    static_abs: torch.Tensor     # :func:`static_error`
    static_frac: torch.Tensor    # share of the inner frame that is still
    top5_flow: torch.Tensor      # :func:`top5_flow` of the forward flow
    colour_shift: torch.Tensor   # [T-1, 3] :func:`colour_shift`
    static_always: torch.Tensor  # [1, 1, H, W] still in every pair within a shot


def _pair_series(frames: torch.Tensor, flows: ClipFlows, pair_ok: torch.Tensor,
                 inner: torch.Tensor, chunk_pairs: int, device, hooks: Hooks) -> PairSeries:
    t, _, h, w = frames.shape
    n = t - 1

    def unmeasured() -> torch.Tensor:
        return torch.full((n,), float("nan"))

    s = PairSeries(warp_abs=unmeasured(), warp_sq=unmeasured(), struct_abs=unmeasured(),
                   ssim=unmeasured(), static_abs=unmeasured(), static_frac=torch.zeros(n),
                   top5_flow=torch.zeros(n), colour_shift=torch.full((n, 3), float("nan")),
                   static_always=torch.ones(1, 1, h, w, dtype=torch.bool, device=device) & inner)
    inner_px = inner.float().sum()
    for start in range(0, n, chunk_pairs):
        hooks.check_interrupt()
        stop = min(n, start + chunk_pairs)
        p = _aligned_pairs(frames, flows, inner, start, stop, device)
        abs_err, sq_err = warp_errors(p)
        s.warp_abs[start:stop] = abs_err.cpu()
        s.warp_sq[start:stop] = sq_err.cpu()
        s.struct_abs[start:stop] = gain_compensated_error(p).cpu()
        s.ssim[start:stop] = aligned_ssim(p).cpu()
        s.static_abs[start:stop] = static_error(p).cpu()
        s.static_frac[start:stop] = (p.still.float().sum(dim=(1, 2, 3)) / inner_px).cpu()
        s.top5_flow[start:stop] = top5_flow(p.forward).cpu()
        s.colour_shift[start:stop] = colour_shift(p).cpu()
        ok = pair_ok[start:stop].to(device).view(-1, 1, 1, 1)
        s.static_always &= (p.still | ~ok).all(0, keepdim=True)
    for series in (s.warp_abs, s.warp_sq, s.struct_abs, s.static_abs, s.ssim, s.colour_shift):
        series[~pair_ok] = float("nan")  # a cut is not an error
    return s


@dataclass
class ClipContext:
    """What several metrics share. Metrics record their details in extras, per_frame, notes."""
    frames: torch.Tensor              # [T, 3, H, W] 0..1
    fps: float
    device: torch.device              # where the per-pair work runs
    hooks: Hooks
    border: int                       # px left out at each edge (letterbox, warp padding)
    lab_means: torch.Tensor           # [T, 3] Lab mean inside the border
    bounds: Boundaries
    segments: list[tuple[int, int]]   # shots, [start, stop)
    luma: torch.Tensor                # [T] mean luma inside the border, code values
    extras: dict
    per_frame: dict[str, list[float]]
    notes: list[str]
    # Motion, from :func:`add_motion` (a single frame has none).
    flows: ClipFlows | None = None
    pair_ok: torch.Tensor | None = None   # [T-1] False where the pair straddles a cut
    inner: torch.Tensor | None = None     # [1, 1, H, W] inside the border
    pairs: PairSeries | None = None
    static_fraction: float = 0.0          # mean share of still pixels over pairs within a shot

    @property
    def measured_pairs(self) -> torch.Tensor:
        """Pairs within a shot whose warp error could be measured."""
        return self.pair_ok & ~torch.isnan(self.pairs.warp_abs)


def clip_context(frames: torch.Tensor, *, fps: float, device, hooks: Hooks,
                 known_seams: Sequence[int] = (), overlap: int = 0) -> ClipContext:
    """Shots, luma and Lab means of ``frames`` ``[T, 3, H, W]``; no motion yet.

    ``known_seams``: frames where a rendered segment begins (seams, never cuts), the first
    ``overlap`` frames of each cross-faded with the segment before.
    """
    t, _, h, w = frames.shape
    border = auto_border(h, w)
    lab_means = frame_lab_means(frames, border)
    bounds = detect_boundaries(frames, lab_means, known_seams=known_seams, overlap=overlap)
    luma = to_grey(crop_border(frames, border).float()).mean(dim=(1, 2, 3)) * 255.0
    return ClipContext(
        frames=frames, fps=fps, device=device, hooks=hooks, border=border,
        lab_means=lab_means, bounds=bounds, segments=bounds.segments(t), luma=luma,
        extras={"frames": t, "height": h, "width": w, "fps": fps, "border_px": border,
                "flow_backend": "torch coarse-to-fine Lucas-Kanade"},
        per_frame={"luma_mean": luma.tolist(),
                   "luma_d2": _luma_jumps(luma, bounds.cuts).tolist()},
        notes=[])


def add_motion(ctx: ClipContext, *, flows: ClipFlows | None, flow_frames: torch.Tensor | None,
               chunk_pairs: int) -> None:
    """Flows (given, or from ``flow_frames``, or from the clip) and the per-pair errors."""
    t, _, h, w = ctx.frames.shape
    if flows is None:
        src = flow_frames if flow_frames is not None else ctx.frames
        flows = clip_flows(src, chunk_pairs=chunk_pairs, device=ctx.device,
                           progress_desc="report: optical flow", hooks=ctx.hooks)
        ctx.extras["flow_source"] = "reference video" if flow_frames is not None \
            else "clip itself"
    else:
        ctx.extras["flow_source"] = "given"
    # Pairs that straddle a cut are skipped by every flow metric.
    pair_ok = torch.ones(t - 1, dtype=torch.bool)
    for c in ctx.bounds.cuts:
        pair_ok[c - 1] = False
    ctx.flows, ctx.pair_ok = flows, pair_ok
    ctx.inner = _border_mask(h, w, ctx.border, ctx.device)
    ctx.pairs = _pair_series(ctx.frames, flows, pair_ok, ctx.inner, chunk_pairs, ctx.device,
                             ctx.hooks)
    ctx.static_fraction = float(ctx.pairs.static_frac[pair_ok].mean()) if pair_ok.any() \
        else 0.0
