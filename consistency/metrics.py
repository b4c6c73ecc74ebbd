"""Weight-free temporal consistency metrics (0..255 code units unless stated).

Definitions follow the project reference (REFERENCE §7.3). Flicker is the RMS second
difference of a per-frame statistic divided by sqrt(6): it equals the std of iid jitter, is
exactly 0 on linear fades and barely moves with motion. Plain consecutive-frame SSIM and
unfiltered mean-abs-difference flicker reward or punish motion, so they are not used as verdicts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..runtime.progress import check_interrupt
from .color import auto_border, crop_border, frame_lab_means, rgb_to_lab
from .cuts import Boundaries, detect_boundaries
from .flow import ClipFlows, clip_flows, compose, to_grey, warp

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


def verdict_of(name: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    direction, good, fail, _, warn_only = THRESHOLDS[name]
    if direction == "lower":
        v = "good" if value < good else ("warn" if value <= fail else "fail")
    else:
        v = "good" if value > good else ("warn" if value >= fail else "fail")
    return "warn" if (warn_only and v == "fail") else v


def subscore(name: str, value: float | None) -> float | None:
    """1 at the good bound or better, 0.5 at the fail bound, 0 at twice as far."""
    if value is None or math.isnan(value):
        return None
    direction, good, fail, _, _ = THRESHOLDS[name]
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


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-batch mean of ``x`` [B,C,H,W] over ``mask`` [B,1,H,W] (NaN where empty)."""
    m = mask.to(x.dtype).expand_as(x)
    den = m.sum(dim=(1, 2, 3))
    return (x * m).sum(dim=(1, 2, 3)) / den.where(den > 0, torch.full_like(den, float("nan")))


def laplacian(g: torch.Tensor) -> torch.Tensor:
    """3x3 Laplacian of ``[N, 1, H, W]`` (replicate-padded)."""
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=g.device)
    return F.conv2d(F.pad(g, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))


def _border_mask(h: int, w: int, border: int, device) -> torch.Tensor:
    m = torch.zeros(1, 1, h, w, dtype=torch.bool, device=device)
    b = min(border, (h - 1) // 2, (w - 1) // 2)
    m[..., b:h - b, b:w - b] = True
    return m


def compute_metrics(frames: torch.Tensor, *, fps: float = 16.0, flows: ClipFlows | None = None,
                    flow_frames: torch.Tensor | None = None, chunk_pairs: int = 8,
                    device=None) -> MetricsResult:
    """All metrics of ``frames`` ``[T, 3, H, W]`` (0..1).

    Motion comes from ``flows`` if given, else from ``flow_frames`` (e.g. the source of an edit,
    same size) if given, else from ``frames`` themselves.
    """
    t, _, h, w = frames.shape
    device = torch.device(device) if device is not None else frames.device
    border = auto_border(h, w)
    notes: list[str] = []
    lab_means = frame_lab_means(frames, border)
    bounds = detect_boundaries(frames, lab_means)
    segments = bounds.segments(t)
    luma = to_grey(crop_border(frames, border).float()).mean(dim=(1, 2, 3)) * 255.0
    values: dict[str, float | None] = {}
    extras: dict = {"frames": t, "height": h, "width": w, "fps": fps, "border_px": border,
                    "flow_backend": "torch coarse-to-fine Lucas-Kanade"}
    values["luma_flicker"] = float(segment_flicker(luma, segments))
    values["chroma_flicker"] = float(segment_flicker(lab_means[:, 1:], segments).norm())
    per_frame: dict[str, list[float]] = {"luma_mean": luma.tolist()}
    d2 = torch.zeros(t)
    if t >= 3:
        d2[1:-1] = (luma[2:] - 2 * luma[1:-1] + luma[:-2]).abs()
        for c in bounds.cuts:  # a cut is not flicker
            d2[max(c - 1, 0):min(c + 1, t)] = 0
    per_frame["luma_d2"] = d2.tolist()

    if t < 2:
        notes.append("a single frame has no temporal behaviour; only colour statistics apply")
        for k in THRESHOLDS:
            values.setdefault(k, None)
        values["luma_flicker"] = values["chroma_flicker"] = None
        return MetricsResult(values, extras, per_frame, bounds, False, notes)

    if flows is None:
        src = flow_frames if flow_frames is not None else frames
        flows = clip_flows(src, chunk_pairs=chunk_pairs, device=device,
                           progress_desc="report: optical flow")
        extras["flow_source"] = "reference video" if flow_frames is not None else "clip itself"
    else:
        extras.setdefault("flow_source", "given")

    # Pairs that straddle a cut are skipped by every flow metric.
    pair_ok = torch.ones(t - 1, dtype=torch.bool)
    for c in bounds.cuts:
        pair_ok[c - 1] = False
    inner = _border_mask(h, w, border, device)

    warp_err = torch.full((t - 1,), float("nan"))
    warp_sq = torch.full((t - 1,), float("nan"))
    struct_err = torch.full((t - 1,), float("nan"))
    static_err = torch.full((t - 1,), float("nan"))
    static_frac = torch.zeros(t - 1)
    ssim_pair = torch.full((t - 1,), float("nan"))
    top5 = torch.zeros(t - 1)
    static_always = torch.ones(1, 1, h, w, dtype=torch.bool, device=device) & inner
    from kornia.metrics import ssim as kornia_ssim

    for start in range(0, t - 1, chunk_pairs):
        check_interrupt()
        stop = min(t - 1, start + chunk_pairs)
        a = frames[start:stop].to(device, torch.float32) * 255.0
        b = frames[start + 1:stop + 1].to(device, torch.float32) * 255.0
        fwd = flows.forward[start:stop].to(device, torch.float32)
        bwd = flows.backward[start:stop].to(device, torch.float32)
        valid = flows.valid[start:stop].to(device) & inner
        b_w = warp(b, fwd)
        diff = (a - b_w).abs()
        warp_err[start:stop] = _masked_mean(diff, valid).cpu()
        warp_sq[start:stop] = _masked_mean(diff ** 2, valid).cpu()
        m = valid.to(a.dtype)
        gain = (b_w * a * m).sum(dim=(2, 3), keepdim=True) / \
            (b_w * b_w * m).sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        struct_err[start:stop] = _masked_mean((gain * b_w - a).abs(), valid).cpu()
        still = valid & (fwd.norm(dim=1, keepdim=True) < 0.5) & (bwd.norm(dim=1, keepdim=True) < 0.5)
        static_frac[start:stop] = (still.float().sum(dim=(1, 2, 3)) / inner.float().sum()).cpu()
        static_err[start:stop] = _masked_mean((b - a).abs(), still).cpu()
        ok = pair_ok[start:stop].to(device).view(-1, 1, 1, 1)
        static_always &= (still | ~ok).all(0, keepdim=True)
        ga, gbw = to_grey(a / 255.0), to_grey(b_w / 255.0)
        smap = kornia_ssim(gbw, ga, 11)
        ssim_pair[start:stop] = _masked_mean(smap, valid).cpu()
        mag = fwd.norm(dim=1).flatten(1)
        k = max(1, int(0.05 * mag.shape[1]))
        top5[start:stop] = mag.topk(k, dim=1).values.mean(1).cpu()

    for series in (warp_err, warp_sq, struct_err, static_err, ssim_pair):
        series[~pair_ok] = float("nan")  # a cut is not an error
    okf = pair_ok & ~torch.isnan(warp_err)
    if okf.any():
        values["warp_mae"] = float(warp_err[okf].mean())
        extras["warp_mae_p95"] = float(torch.quantile(warp_err[okf], 0.95))
        extras["warp_rmse"] = float(warp_sq[okf].mean().sqrt())
        values["struct_warp_mae"] = float(struct_err[okf & ~torch.isnan(struct_err)].mean())
        values["ssim_aligned"] = float(ssim_pair[okf & ~torch.isnan(ssim_pair)].mean())
    else:
        values["warp_mae"] = values["struct_warp_mae"] = values["ssim_aligned"] = None
    mean_static = float(static_frac[pair_ok].mean()) if pair_ok.any() else 0.0
    extras["static_frac"] = mean_static
    sok = pair_ok & ~torch.isnan(static_err)
    values["static_mae"] = float(static_err[sok].mean()) if mean_static >= 0.05 and sok.any() \
        else None
    per_frame["warp_mae"] = warp_err.tolist()
    per_frame["ssim_aligned"] = ssim_pair.tolist()

    # Local flicker on always-static pixels only: a block crossed by a moving object is motion.
    values["local_flicker"] = None
    if mean_static > 0.3 and t >= 3:
        grey = to_grey(frames.float()) * 255.0
        sa = static_always.to(frames.device, torch.float32)
        bs = (h // 4, w // 4)
        num = F.avg_pool2d(grey * sa, bs, bs)
        den = F.avg_pool2d(sa.expand(1, 1, h, w), bs, bs)
        usable = den[0, 0] > 0.2
        if usable.any():
            block = num / den.clamp_min(1e-6)
            fl = segment_flicker(block[:, 0], segments)
            values["local_flicker"] = float(fl[usable].max())
        else:
            notes.append("local_flicker: no 4x4 block has enough static pixels")
    elif t >= 3:
        notes.append("local_flicker: n/a, less than 30 % of the frame is static")

    # Sharpness pumping: detail energy per frame.
    g = to_grey(crop_border(frames, border).float())
    g = g / g.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-4)
    energy = torch.cat([laplacian(g[i:i + 16].to(device)).pow(2).mean(dim=(1, 2, 3)).cpu()
                        for i in range(0, t, 16)])
    values["hf_pump"] = float(segment_flicker(energy, segments) / energy.mean().clamp_min(1e-12)) \
        if t >= 3 else None
    per_frame["hf_energy"] = energy.tolist()

    # Colour drift within each shot, seam ratio over the whole clip.
    drift = 0.0
    hist_drift = 0.0
    for a_, b_ in segments:
        drift = max(drift, float((lab_means[a_:b_] - lab_means[a_]).norm(dim=1).max()))
        q = torch.linspace(0.02, 0.98, 33)
        lab0 = rgb_to_lab(crop_border(frames[a_:a_ + 1], border)).flatten(2)[0]
        q0 = torch.quantile(lab0.cpu(), q, dim=1)
        for i in range(a_ + 1, b_, max(1, (b_ - a_) // 8)):
            labi = rgb_to_lab(crop_border(frames[i:i + 1], border)).flatten(2)[0]
            hist_drift = max(hist_drift, float((torch.quantile(labi.cpu(), q, dim=1) - q0)
                                               .abs().mean(0).max()))
    values["drift_de"] = drift
    extras["histogram_drift_w1"] = hist_drift
    step = bounds.step_de
    within = step[pair_ok] if step.numel() else step  # detected cuts are reported, not scored
    values["seam_ratio"] = float(within.max() / within.median().clamp_min(0.05)) \
        if within.numel() >= 2 else None
    per_frame["step_de"] = step.tolist()
    extras["cuts"] = list(bounds.cuts)
    extras["seams"] = list(bounds.seams)

    # Motion smoothness: predict frame t from t-1 and t+1 halfway along F_{t+1 -> t-1}.
    ms_err = torch.full((t,), float("nan"))
    for i in range(1, t - 1):
        if not (pair_ok[i - 1] and pair_ok[i]):
            continue
        if i % 8 == 0:
            check_interrupt()
        g_ = compose(flows.backward[i:i + 1].to(device), flows.backward[i - 1:i].to(device))
        prev = frames[i - 1:i].to(device, torch.float32) * 255.0
        nxt = frames[i + 1:i + 2].to(device, torch.float32) * 255.0
        pred = 0.5 * (warp(prev, 0.5 * g_) + warp(nxt, -0.5 * g_))
        mask = flows.valid[i:i + 1].to(device) & flows.valid_back[i - 1:i].to(device) & inner
        ms_err[i] = float(_masked_mean((pred - frames[i:i + 1].to(device) * 255.0).abs(), mask))
    ok_ms = ~torch.isnan(ms_err)
    values["motion_smooth"] = float((255.0 - ms_err[ok_ms].mean()) / 255.0) if ok_ms.any() else None
    per_frame["motion_err"] = ms_err.tolist()

    # Dynamic degree (VBench rule): flow at ~8 fps, top 5 % magnitude per pair.
    stride = max(1, round(fps / 8.0))
    mags = []
    for s0 in range(0, t - stride, stride):
        if not bool(pair_ok[s0:s0 + stride].all()):
            continue
        if stride == 1:
            mags.append(float(top5[s0]))
            continue
        f = flows.forward[s0:s0 + 1].to(device, torch.float32)
        for j in range(1, stride):
            f = compose(f, flows.forward[s0 + j:s0 + j + 1].to(device))
        mag = f.norm(dim=1).flatten()
        mags.append(float(mag.topk(max(1, int(0.05 * mag.numel()))).values.mean()))
    thres = 6.0 * max(1.0, 8.0 / fps) * min(h, w) / 256.0
    sampled = len(mags) + 1
    need = max(1, round(4 * sampled / 16))
    moving = sum(m > thres for m in mags)
    dynamic = moving >= need
    extras.update(top5_flow=max(mags) if mags else 0.0, dynamic_threshold_px=thres,
                  dynamic_pairs=moving, dynamic_pairs_needed=need)
    per_frame["top5_flow"] = top5.tolist()
    return MetricsResult(values, extras, per_frame, bounds, dynamic, notes)
