"""Weight-free temporal consistency metrics (0..255 code units unless stated).

Definitions follow the project reference (REFERENCE §7.3). Flicker is the RMS second
difference of a per-frame statistic divided by sqrt(6): it equals the std of iid jitter, is
exactly 0 on linear fades and barely moves with motion. Plain consecutive-frame SSIM and
unfiltered mean-abs-difference flicker reward or punish motion, so they are not used as verdicts.

Each metric is one function of a :class:`ClipContext` (the clip's shots, luma, Lab means,
flows and per-pair errors, computed once); :data:`METRICS` maps its name to that function and
:data:`THRESHOLDS` to its verdict bounds. A clip rendered in segments whose starts are given
also gets :data:`SEGMENT_METRICS` (the seam at each boundary, the drift from segment to segment).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.hooks import NO_HOOKS, Hooks
from .color import crop_border, rgb_to_lab
from .cuts import Boundaries
from .flow import ClipFlows, compose, to_grey, warp
from .inputs import segment_boundaries
from .metric_context import ClipContext, add_motion, clip_context, masked_mean, top5_flow

SQRT6 = math.sqrt(6.0)


def flicker(series: torch.Tensor) -> torch.Tensor:
    """RMS of the second temporal difference / sqrt(6) along dim 0 (0 for < 3 frames)."""
    s = series.double()
    if s.shape[0] < 3:
        return torch.zeros(s.shape[1:], dtype=torch.float64)
    d2 = s[2:] - 2 * s[1:-1] + s[:-2]
    return (d2.pow(2).mean(0)).sqrt() / SQRT6


def segment_flicker(series: torch.Tensor, segments) -> torch.Tensor:
    """Flicker pooled over shot segments (second differences never straddle a cut)."""
    d2s = []
    for a, b in segments:
        s = series[a:b].double()
        if s.shape[0] >= 3:
            d2s.append(s[2:] - 2 * s[1:-1] + s[:-2])
    if not d2s:
        return torch.zeros(series.shape[1:], dtype=torch.float64)
    d2 = torch.cat(d2s)
    return d2.pow(2).mean(0).sqrt() / SQRT6


# name: (direction, good bound, fail bound, unit, warn_only)
THRESHOLDS: dict[str, tuple[str, float, float, str, bool]] = {
    "luma_flicker": ("lower", 0.5, 1.5, "code values", False),
    "chroma_flicker": ("lower", 0.5, 1.5, "Lab a*b*", False),
    "local_flicker": ("lower", 1.0, 3.0, "code values", False),
    "warp_mae": ("lower", 1.5, 3.0, "code values", False),
    "struct_warp_mae": ("lower", 1.5, 3.0, "code values", False),
    "static_mae": ("lower", 1.0, 3.0, "code values", False),
    "ssim_aligned": ("higher", 0.97, 0.90, "0..1", False),
    "hf_pump": ("lower", 0.03, 0.10, "ratio", False),
    "drift_de": ("lower", 3.0, 6.0, "dE76", True),
    "seam_ratio": ("lower", 5.0, 10.0, "ratio", False),
    "motion_smooth": ("higher", 0.99, 0.98, "0..1", False),
}

# Measured only when the clip's segment starts are known (a clip rendered in pieces). Unlike
# drift within a shot, colour that moves from one rendered segment to the next is the known
# failure of chained rendering, so it fails; a seam is judged as seam_ratio is.
SEGMENT_THRESHOLDS: dict[str, tuple[str, float, float, str, bool]] = {
    "boundary_seam": ("lower", 5.0, 10.0, "ratio", False),
    "segment_drift_de": ("lower", 3.0, 6.0, "dE76", False),
}

DESCRIPTIONS = {
    "luma_flicker": "frame-to-frame brightness wobble (2nd difference of mean luma)",
    "chroma_flicker": "frame-to-frame colour wobble (2nd difference of mean a*, b*)",
    "local_flicker": "worst 4x4 block brightness wobble on static pixels",
    "warp_mae": "error after motion compensation (occlusions masked)",
    "struct_warp_mae": "warp error after per-frame gain: texture boiling / morphing",
    "static_mae": "change of pixels that do not move",
    "ssim_aligned": "structural similarity of motion-aligned neighbours",
    "hf_pump": "sharpness breathing (2nd difference of detail energy)",
    "drift_de": "colour drift from the first frame of each shot (may be intended)",
    "seam_ratio": "largest colour step / median step (cut or chunk seam)",
    "motion_smooth": "middle frame predicted from its neighbours (jitter, stutter)",
    "dynamic": "enough motion to be video (VBench dynamic-degree rule)",
}

SEGMENT_DESCRIPTIONS = {
    "boundary_seam": "colour change across a segment boundary / median step",
    "segment_drift_de": "colour change of the same surfaces from the first rendered segment",
}


def bounds_of(name: str) -> tuple[str, float, float, str, bool]:
    """Verdict bounds of any metric the report can list."""
    return THRESHOLDS[name] if name in THRESHOLDS else SEGMENT_THRESHOLDS[name]


def verdict_of(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    direction, good, fail, _, warn_only = bounds_of(name)
    if direction == "lower":
        v = "good" if value < good else ("warn" if value <= fail else "fail")
    else:
        v = "good" if value > good else ("warn" if value >= fail else "fail")
    return "warn" if (warn_only and v == "fail") else v


def subscore(name: str, value: float | None) -> float | None:
    """1 at the good bound or better, 0.5 at the fail bound, 0 at twice as far."""
    if value is None or math.isnan(value):
        return None
    direction, good, fail, _, _ = bounds_of(name)
    if direction == "higher":
        value, good, fail = -value, -good, -fail
    if value <= good:
        return 1.0
    span = fail - good
    if value <= fail:
        return 1.0 - 0.5 * (value - good) / span
    return max(0.0, 0.5 - 0.5 * (value - fail) / span)


@dataclass
class MetricsResult:
    values: dict[str, float | None]
    extras: dict[str, float | int | bool | str | None]
    per_frame: dict[str, list[float]]   # series for plots / worst frames
    boundaries: Boundaries
    dynamic: bool
    notes: list[str] = field(default_factory=list)


def laplacian(g: torch.Tensor) -> torch.Tensor:
    """3x3 Laplacian of ``[N, 1, H, W]`` (replicate-padded)."""
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=g.device)
    return F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))


# ---- the metrics: one function each, of a clip with at least two frames ----

def luma_flicker(ctx: ClipContext) -> float:
    """Flicker of each frame's mean luma inside the border, pooled over shots."""
    return float(segment_flicker(ctx.luma, ctx.segments))


def chroma_flicker(ctx: ClipContext) -> float:
    """Flicker of each frame's mean a*, b* (length of the pair), pooled over shots."""
    return float(segment_flicker(ctx.lab_means[:, 1:], ctx.segments).norm())


def warp_mae(ctx: ClipContext) -> float | None:
    """Mean |frame t - frame t+1 warped onto t| over trustworthy pixels, over pairs in a shot."""
    err = ctx.pairs.warp_abs
    ctx.per_frame["warp_mae"] = err.tolist()
    ok = ctx.measured_pairs
    if not ok.any():
        return None
    ctx.extras["warp_mae_p95"] = float(torch.quantile(err[ok], 0.95))
    ctx.extras["warp_rmse"] = float(ctx.pairs.warp_sq[ok].mean().sqrt())
    return float(err[ok].mean())


def struct_warp_mae(ctx: ClipContext) -> float | None:
    """:func:`warp_mae` after a per-pair gain: flicker taken out, texture boiling left in."""
    ok = ctx.measured_pairs
    if not ok.any():
        return None
    err = ctx.pairs.struct_abs
    return float(err[ok & ~torch.isnan(err)].mean())


def ssim_aligned(ctx: ClipContext) -> float | None:
    """SSIM of frame t and frame t+1 warped onto t over trustworthy pixels, over pairs."""
    ssim = ctx.pairs.ssim
    ctx.per_frame["ssim_aligned"] = ssim.tolist()
    ok = ctx.measured_pairs
    if not ok.any():
        return None
    return float(ssim[ok & ~torch.isnan(ssim)].mean())


def static_mae(ctx: ClipContext) -> float | None:
    """Mean |frame t+1 - frame t| on pixels that do not move (n/a under 5 % still pixels)."""
    ctx.extras["static_frac"] = ctx.static_fraction
    err = ctx.pairs.static_abs
    ok = ctx.pair_ok & ~torch.isnan(err)
    return float(err[ok].mean()) if ctx.static_fraction >= 0.05 and ok.any() else None


def local_flicker(ctx: ClipContext) -> float | None:
    """Worst flicker of a 4x4 block's mean luma, on pixels still throughout each shot.

    Only always-still pixels count: a block crossed by a moving object changes by motion.
    """
    frames = ctx.frames
    t, _, h, w = frames.shape
    if t < 3:
        return None
    if ctx.static_fraction <= 0.3:
        ctx.notes.append("local_flicker: n/a, less than 30 % of the frame is static")
        return None
    grey = to_grey(frames.float()) * 255.0
    still = ctx.pairs.static_always.to(frames.device, torch.float32)
    bs = (h // 4, w // 4)
    num = F.avg_pool2d(grey * still, bs, bs)
    den = F.avg_pool2d(still.expand(1, 1, h, w), bs, bs)
    usable = den[0, 0] > 0.2
    if not usable.any():
        ctx.notes.append("local_flicker: no 4x4 block has enough static pixels")
        return None
    block = num / den.clamp_min(1e-6)
    return float(segment_flicker(block[:, 0], ctx.segments)[usable].max())


def hf_pump(ctx: ClipContext) -> float | None:
    """Sharpness breathing: flicker of each frame's detail energy over its mean energy.

    Detail energy is the mean squared Laplacian of grey divided by its mean, so brightness
    flicker does not read as sharpness.
    """
    t = ctx.frames.shape[0]
    g = to_grey(crop_border(ctx.frames, ctx.border).float())
    g = g / g.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-4)
    energy = torch.cat([laplacian(g[i:i + 16].to(ctx.device)).pow(2).mean(dim=(1, 2, 3)).cpu()
                        for i in range(0, t, 16)])
    ctx.per_frame["hf_energy"] = energy.tolist()
    if t < 3:
        return None
    return float(segment_flicker(energy, ctx.segments) / energy.mean().clamp_min(1e-12))


def _histogram_drift(ctx: ClipContext) -> float:
    """Largest mean shift of the Lab quantiles (~ W1 distance) from each shot's first frame."""
    q = torch.linspace(0.02, 0.98, 33)

    def quantiles(i: int) -> torch.Tensor:
        lab = rgb_to_lab(crop_border(ctx.frames[i:i + 1], ctx.border)).flatten(2)[0]
        return torch.quantile(lab.cpu(), q, dim=1)

    worst = 0.0
    for a, b in ctx.segments:
        first = quantiles(a)
        for i in range(a + 1, b, max(1, (b - a) // 8)):  # 8 frames a shot are enough for drift
            worst = max(worst, float((quantiles(i) - first).abs().mean(0).max()))
    return worst


def drift_de(ctx: ClipContext) -> float:
    """Largest Lab-mean distance (dE76) of a frame from the first frame of its shot."""
    drift = 0.0
    for a, b in ctx.segments:
        drift = max(drift, float((ctx.lab_means[a:b] - ctx.lab_means[a]).norm(dim=1).max()))
    ctx.extras["histogram_drift_w1"] = _histogram_drift(ctx)
    return drift


# The least median step a seam ratio divides by. A step below about 2 dE is invisible however
# calm the clip (2 dE over the detector's ratio of 8), so the tiny median step of a still or
# deflickered shot must not turn an invisible 1 dE step into a failing seam (it did: 0.99 dE
# over a median of 0.08 read as ratio 12 after the post-pass smoothed a clip).
MEDIAN_STEP_FLOOR = 0.25


def seam_ratio(ctx: ClipContext) -> float | None:
    """Largest Lab-mean step between consecutive frames over the median step, within shots."""
    step = ctx.bounds.step_de
    within = step[ctx.pair_ok] if step.numel() else step  # detected cuts are reported, not scored
    ctx.per_frame["step_de"] = step.tolist()
    ctx.extras["cuts"] = list(ctx.bounds.cuts)
    ctx.extras["seams"] = list(ctx.bounds.seams)
    return (float(within.max() / within.median().clamp_min(MEDIAN_STEP_FLOOR))
            if within.numel() >= 2 else None)


def motion_smooth(ctx: ClipContext) -> float | None:
    """1 - mean |frame t - its prediction from t-1 and t+1| / 255.

    The prediction moves both neighbours halfway along the flow t+1 -> t-1, so it lands on
    frame t only when motion is even: jitter and stutter miss.
    """
    frames, flows, device = ctx.frames, ctx.flows, ctx.device
    t = frames.shape[0]
    err = torch.full((t,), float("nan"))
    for i in range(1, t - 1):
        if not (ctx.pair_ok[i - 1] and ctx.pair_ok[i]):
            continue
        if i % 8 == 0:
            ctx.hooks.check_interrupt()
        g = compose(flows.backward[i:i + 1].to(device), flows.backward[i - 1:i].to(device))
        prev = frames[i - 1:i].to(device, torch.float32) * 255.0
        nxt = frames[i + 1:i + 2].to(device, torch.float32) * 255.0
        pred = 0.5 * (warp(prev, 0.5 * g) + warp(nxt, -0.5 * g))
        mask = flows.valid[i:i + 1].to(device) & flows.valid_back[i - 1:i].to(device) & ctx.inner
        err[i] = float(masked_mean((pred - frames[i:i + 1].to(device) * 255.0).abs(), mask))
    ctx.per_frame["motion_err"] = err.tolist()
    ok = ~torch.isnan(err)
    return float((255.0 - err[ok].mean()) / 255.0) if ok.any() else None


# How each metric is measured, in the order the report lists them; verdicts from THRESHOLDS.
METRICS: dict[str, Callable[[ClipContext], float | None]] = {
    "luma_flicker": luma_flicker,
    "chroma_flicker": chroma_flicker,
    "warp_mae": warp_mae,
    "struct_warp_mae": struct_warp_mae,
    "ssim_aligned": ssim_aligned,
    "static_mae": static_mae,
    "local_flicker": local_flicker,
    "hf_pump": hf_pump,
    "drift_de": drift_de,
    "seam_ratio": seam_ratio,
    "motion_smooth": motion_smooth,
}




def segment_ranges(ctx: ClipContext) -> list[tuple[int, int]]:
    """``[start, stop)`` of each rendered segment, after its cross-fade with the one before
    (the blended frames belong to neither piece alone)."""
    t, overlap = ctx.frames.shape[0], ctx.bounds.overlap
    starts = [0, *ctx.bounds.given]
    return [(a if k == 0 else min(a + overlap, b - 1), b)
            for k, (a, b) in enumerate(zip(starts, starts[1:] + [t]))]


def tracked_colour(ctx: ClipContext) -> torch.Tensor:
    """``[T, 3]`` RGB shift (code values) of each frame from frame 0 along the motion.

    The sum of per-pair :func:`colour_shift`: how the colour of the surfaces the camera follows
    has changed, so new content coming into view does not read as drift. A pair without valid
    flow falls back to its plain mean-colour step; a cut adds nothing (a new shot).
    """
    plain = _mean_rgb(ctx)
    step = ctx.pairs.colour_shift.clone()
    fallback = torch.isnan(step).any(1) & ctx.pair_ok
    step[fallback] = (plain[1:] - plain[:-1])[fallback]
    step[~ctx.pair_ok] = 0.0
    return torch.cat((torch.zeros(1, 3), step.cumsum(0)))


def _mean_rgb(ctx: ClipContext) -> torch.Tensor:
    """``[T, 3]`` mean RGB inside the border, code values."""
    return crop_border(ctx.frames, ctx.border).float().mean(dim=(2, 3)).cpu() * 255.0


def _shift_de(base: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """dE76 between RGB colours ``base`` and ``base + shift`` (``[N, 3]``, code values)."""
    ends = torch.stack((base, base + shift)).clamp(0, 255) / 255.0
    lab = rgb_to_lab(ends.reshape(-1, 3, 1, 1)).view(2, -1, 3)
    return (lab[1] - lab[0]).norm(dim=1)


def boundary_seam(ctx: ClipContext) -> float | None:
    """The colour step at each segment boundary (and detected seam) over the clip's median step.

    seam_ratio measured exactly where the pieces meet. The step is the larger of the largest
    Lab-mean step of the boundary's pairs and ``jump_de``, the colour change across the whole
    boundary: a cross-fade spreads a jump over its ramp, so no single step shows it, but the
    change across the ramp does. Like the segment drift, ``jump_de`` is the smaller of the
    plain and the along-the-motion change (new content raises one, flow errors the other). The
    median is taken over the other pairs, so the seams do not raise their own yardstick.
    """
    t = ctx.frames.shape[0]
    step = ctx.bounds.step_de
    given = set(ctx.bounds.given)
    spans = {s: list(ctx.bounds.ramp(s, t)) if s in given else [s]
             for s in given | set(ctx.bounds.seams)}
    if not spans:
        return None
    typical_pairs = ctx.pair_ok.clone()
    for ramp in spans.values():
        typical_pairs[[f - 1 for f in ramp]] = False
    typical = step[typical_pairs]
    median = max(float(typical.median()) if typical.numel() else 0.0, MEDIAN_STEP_FLOOR)
    shift, rgb = tracked_colour(ctx), _mean_rgb(ctx)
    starts = sorted(spans)
    before = torch.tensor([s - 1 for s in starts])
    after = torch.tensor([spans[s][-1] for s in starts])
    along = _shift_de(rgb[before], shift[after] - shift[before])
    plain = (ctx.lab_means[after] - ctx.lab_means[before]).norm(dim=1).cpu()
    jump = torch.minimum(along, plain)
    rows = []
    for k, start in enumerate(starts):
        largest = max(float(step[f - 1]) for f in spans[start])
        ratio = max(largest, float(jump[k])) / median
        rows.append({"frame": start, "source": "given" if start in given else "detected",
                     "ramp": len(spans[start]) - 1, "step_de": largest, "jump_de": float(jump[k]),
                     "ratio": ratio,
                     "luma_step": abs(float(ctx.luma[after[k]] - ctx.luma[before[k]])),
                     "verdict": verdict_of("boundary_seam", ratio)})
    ctx.extras["boundaries"] = rows
    ctx.extras["boundary_median_step_de"] = median
    return max(r["ratio"] for r in rows)


def segment_drift_de(ctx: ClipContext) -> float | None:
    """Largest colour distance (dE76) of a rendered segment from the first.

    Two estimates, each of which overstates drift for its own reason, and the smaller counts:
    the plain distance of the segments' Lab means (raised by new content: a pan, an object
    leaving) and the distance along the motion, each segment's mean :func:`tracked_colour`
    shift applied to the first segment's mean colour (raised by flow errors, which add up over
    a long clip). A real change of the clip's colour raises both. Brightness, contrast and
    flicker per segment go to the details.
    """
    t = ctx.frames.shape[0]
    inner = crop_border(ctx.frames, ctx.border).float()
    contrast = torch.cat([(to_grey(inner[i:i + 16]) * 255.0).flatten(1).std(1).cpu()
                          for i in range(0, t, 16)])
    ranges = segment_ranges(ctx)
    shift = tracked_colour(ctx)
    (a0, b0) = ranges[0]
    seg_shift = torch.stack([shift[a:b].mean(0) - shift[a0:b0].mean(0) for a, b in ranges])
    tracked = _shift_de(_mean_rgb(ctx)[a0:b0].mean(0).expand_as(seg_shift), seg_shift)
    means = [ctx.lab_means[a:b].mean(0) for a, b in ranges]
    plain = [float((m - means[0]).norm()) for m in means]
    starts = [0, *ctx.bounds.given]
    rows = [{"segment": k, "start": starts[k], "frames": b - starts[k], "measured_from": a,
             "drift_de": min(plain[k], float(tracked[k])), "tracked_de": float(tracked[k]),
             "plain_de": plain[k], "lab_mean": [float(v) for v in means[k]],
             "luma_mean": float(ctx.luma[a:b].mean()),
             "contrast": float(contrast[a:b].mean()),
             "luma_flicker": float(flicker(ctx.luma[a:b])) if b - a >= 3 else None}
            for k, (a, b) in enumerate(ranges)]
    ctx.extras["segments"] = rows
    return max(r["drift_de"] for r in rows) if len(rows) > 1 else None


# Added to the report when segment starts are given, after METRICS.
SEGMENT_METRICS: dict[str, Callable[[ClipContext], float | None]] = {
    "boundary_seam": boundary_seam,
    "segment_drift_de": segment_drift_de,
}


def dynamic_degree(ctx: ClipContext) -> bool:
    """VBench's rule: is there enough motion to be video (a flag, not a scored metric)?

    Pairs are taken at ~8 fps; a pair moves when its top 5 % flow beats 6 px at a short side of
    256 px, and a quarter of the sampled frames must move.
    """
    frames, flows, fps, device = ctx.frames, ctx.flows, ctx.fps, ctx.device
    t, _, h, w = frames.shape
    stride = max(1, round(fps / 8.0))
    mags = []
    for s0 in range(0, t - stride, stride):
        if not bool(ctx.pair_ok[s0:s0 + stride].all()):
            continue
        if stride == 1:
            mags.append(float(ctx.pairs.top5_flow[s0]))
            continue
        f = flows.forward[s0:s0 + 1].to(device, torch.float32)
        for j in range(1, stride):
            f = compose(f, flows.forward[s0 + j:s0 + j + 1].to(device))
        mags.append(float(top5_flow(f)))
    thres = 6.0 * max(1.0, 8.0 / fps) * min(h, w) / 256.0
    sampled = len(mags) + 1
    need = max(1, round(4 * sampled / 16))
    moving = sum(m > thres for m in mags)
    ctx.extras.update(top5_flow=max(mags) if mags else 0.0, dynamic_threshold_px=thres,
                      dynamic_pairs=moving, dynamic_pairs_needed=need)
    ctx.per_frame["top5_flow"] = ctx.pairs.top5_flow.tolist()
    return moving >= need


def compute_metrics(frames: torch.Tensor, *, fps: float = 16.0, flows: ClipFlows | None = None,
                    flow_frames: torch.Tensor | None = None, chunk_pairs: int = 8,
                    segments=None, device=None, hooks: Hooks = NO_HOOKS) -> MetricsResult:
    """All metrics of ``frames`` ``[T, 3, H, W]`` (0..1).

    Motion comes from ``flows`` if given, else from ``flow_frames`` (e.g. the source of an edit,
    same size) if given, else from ``frames`` themselves. ``segments`` (a VIDEODIT_SEGMENTS
    value or start frames beginning with 0) adds the per-boundary seam and per-segment drift
    metrics. ``hooks`` shows the flow's progress and is asked about Cancel between chunks.
    """
    device = torch.device(device) if device is not None else frames.device
    known_seams, overlap = segment_boundaries(segments, frames.shape[0])
    ctx = clip_context(frames, fps=fps, device=device, hooks=hooks, known_seams=known_seams,
                       overlap=overlap)
    if frames.shape[0] < 2:
        ctx.notes.append("a single frame has no temporal behaviour; only colour statistics apply")
        return MetricsResult(dict.fromkeys(THRESHOLDS), ctx.extras, ctx.per_frame, ctx.bounds,
                             False, ctx.notes)
    add_motion(ctx, flows=flows, flow_frames=flow_frames, chunk_pairs=chunk_pairs)
    values = {name: measure(ctx) for name, measure in METRICS.items()}
    if known_seams:
        values.update({name: measure(ctx) for name, measure in SEGMENT_METRICS.items()})
    dynamic = dynamic_degree(ctx)
    return MetricsResult(values, ctx.extras, ctx.per_frame, ctx.bounds, dynamic, ctx.notes)
