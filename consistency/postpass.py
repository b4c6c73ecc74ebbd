"""The frame-consistency post-pass: analyse, then run only the stages the clip needs.

Order: cuts/seams -> seam colour correction -> global deflicker -> local deflicker -> shimmer.
Nothing is smoothed across a shot cut. Motion comes from the clip itself or, for an edit, from
the reference (source) video, so the edit is smoothed along the source's motion. Where the clip
was rendered in segments and their starts are given, each start is a seam to repair even if
no colour jump is detected there (with every pair of its cross-fade, if the pieces overlap),
and never a cut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..core.hooks import NO_HOOKS, Hooks
from .color import auto_border, frame_lab_means
from .cuts import Boundaries, detect_boundaries
from .deflicker import global_deflicker, local_deflicker
from .flow import ClipFlows, clip_flows, gaussian_blur, to_grey, warp
from .inputs import segment_boundaries
from .metrics import segment_flicker
from .seams import correct_seams
from .shimmer import reduce_shimmer

# Analysis gates: a stage runs only above these (clean synthetic clips sit far below).
GLOBAL_FLICKER_GATE = 0.3      # luma/chroma flicker, code values / Lab units
LOCAL_RESIDUAL_GATE = 1.5      # % RMS of flow-aligned low-frequency brightness ratio
SHIMMER_RESIDUAL_GATE = 1.0    # code values, gain-compensated low-band warp error


@dataclass
class PostPassSettings:
    seam_strength: float = 1.0
    global_strength: float = 1.0
    local_strength: float = 1.0
    shimmer_strength: float = 0.6      # blend factor alpha of the recursive low-band blend
    protect_fades: bool = True         # odd extension at the ends of each shot
    temporal_sigma: float = 4.0        # frames, global deflicker smoothing
    shimmer_full_band: bool = False
    always_run: bool = False           # run every stage with strength > 0, ignoring the gates
    chunk_pairs: int = 8
    device: str | None = None


@dataclass
class PostPassLog:
    analysis: dict = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)
    boundaries: Boundaries | None = None

    def summary(self) -> str:
        lines = ["frame-consistency post-pass"]
        a = self.analysis
        lines.append("analysis: " + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in a.items()))
        for s in self.stages:
            extra = f" ({s['why']})" if s.get("why") else ""
            lines.append(f"- {s['stage']}: {'ran' if s['ran'] else 'skipped'}{extra}")
        return "\n".join(lines)


def _residuals(frames: torch.Tensor, flows: ClipFlows, pair_ok: torch.Tensor, device,
               border: int) -> tuple[float, float]:
    """Flow-aligned (local low-frequency gain %, low-band structural error in code values)."""
    t, _, h, w = frames.shape
    factor = max(1, min(h, w) // 64)
    hs, ws = h // factor, w // factor
    sigma_s = max(2.0, min(hs, ws) / 20.0)
    local, shimmer = [], []
    for i in range(t - 1):
        if not pair_ok[i]:
            continue
        a = frames[i:i + 1].to(device, torch.float32)
        b = frames[i + 1:i + 2].to(device, torch.float32)
        fwd = flows.forward[i:i + 1].to(device, torch.float32)
        valid = flows.valid[i:i + 1].to(device)
        valid[..., :border, :] = False
        valid[..., h - border:, :] = False
        valid[..., :, :border] = False
        valid[..., :, w - border:] = False
        if valid.float().mean() < 0.05:
            continue
        # local: ratio of blurred luma to its aligned neighbour, global gain removed
        la = gaussian_blur(F.interpolate(to_grey(a), size=(hs, ws), mode="area"), sigma_s)
        lb = gaussian_blur(F.interpolate(to_grey(b), size=(hs, ws), mode="area"), sigma_s)
        fs = F.interpolate(fwd, size=(hs, ws), mode="area") / factor
        vs = F.interpolate(valid.float(), size=(hs, ws), mode="area") > 0.99
        if vs.any():
            r = torch.log((la + 0.02) / (warp(lb, fs) + 0.02))[vs]
            local.append(float((r - r.mean()).pow(2).mean().sqrt()) * 100)
        # shimmer: low band, gain-compensated, valid pixels
        lo_a = gaussian_blur(a, 3.0) * 255
        lo_b = warp(gaussian_blur(b, 3.0) * 255, fwd)
        m = valid.float()
        k = (lo_b * lo_a * m).sum(dim=(2, 3), keepdim=True) / \
            (lo_b * lo_b * m).sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        shimmer.append(float(((k * lo_b - lo_a).abs() * m).sum() / (3 * m.sum())))
    med = lambda xs: float(torch.tensor(xs).median()) if xs else 0.0  # noqa: E731
    return med(local), med(shimmer)


def analyse(frames: torch.Tensor, flows: ClipFlows | None, bounds: Boundaries,
            lab_means: torch.Tensor, device) -> dict:
    t, _, h, w = frames.shape
    border = auto_border(h, w)
    segments = bounds.segments(t)
    from .color import crop_border
    luma = to_grey(crop_border(frames, border).float()).mean(dim=(1, 2, 3)) * 255
    out = {"frames": t, "cuts": list(bounds.cuts), "seams": list(bounds.seams),
           "luma_flicker": float(segment_flicker(luma, segments)),
           "chroma_flicker": float(segment_flicker(lab_means[:, 1:], segments).norm())}
    if bounds.given:
        out["given_seams"] = list(bounds.given)
        out["segment_overlap"] = bounds.overlap
    if flows is not None and t >= 2:
        pair_ok = torch.ones(t - 1, dtype=torch.bool)
        for c in bounds.cuts:
            pair_ok[c - 1] = False
        out["local_residual_pct"], out["shimmer_residual"] = _residuals(
            frames, flows, pair_ok, device, border)
    return out


def _prepare_reference(reference: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if reference.shape[-2:] != like.shape[-2:]:
        reference = F.interpolate(reference.float(), size=like.shape[-2:], mode="bilinear",
                                  align_corners=False, antialias=True)
    return reference


def run_postpass(frames: torch.Tensor, reference: torch.Tensor | None = None,
                 settings: PostPassSettings = PostPassSettings(), *, segments=None,
                 hooks: Hooks = NO_HOOKS) -> tuple[torch.Tensor, PostPassLog]:
    """Repair ``frames`` ``[T, 3, H, W]`` (0..1); return the result and what was done.

    ``segments`` (a VIDEODIT_SEGMENTS value or a list of start frames beginning with 0) names
    where rendered pieces meet. ``hooks`` carries the progress bar and Cancel into the flow
    and every repair stage.
    """
    t = frames.shape[0]
    known_seams, overlap = segment_boundaries(segments, t)
    device = torch.device(settings.device) if settings.device else frames.device
    log = PostPassLog()
    if t < 3:
        log.analysis = {"frames": t}
        log.stages.append({"stage": "all", "ran": False, "why": "fewer than 3 frames"})
        return frames.clone(), log
    border = auto_border(*frames.shape[-2:])
    lab_means = frame_lab_means(frames, border)
    bounds = detect_boundaries(frames, lab_means, known_seams=known_seams, overlap=overlap)
    log.boundaries = bounds
    need_flow = (settings.seam_strength > 0 or settings.local_strength > 0
                 or settings.shimmer_strength > 0)
    flows = None
    if need_flow:
        src = _prepare_reference(reference, frames) if reference is not None else frames
        flows = clip_flows(src, chunk_pairs=settings.chunk_pairs, device=device,
                           progress_desc="post-pass: optical flow", hooks=hooks)
    log.analysis = analyse(frames, flows, bounds, lab_means, device)
    log.analysis["flow_source"] = "reference video" if reference is not None else "clip itself"
    segments = bounds.segments(t)
    out = frames
    force = settings.always_run

    def gate(name: str, strength: float, needed: bool, why: str) -> bool:
        if strength <= 0:
            log.stages.append({"stage": name, "ran": False, "why": "strength 0"})
            return False
        if not (needed or force):
            log.stages.append({"stage": name, "ran": False, "why": why})
            return False
        return True

    repair = bounds.repair_frames(t)
    if gate("seam colour", settings.seam_strength, bool(repair), "no chunk seam found"):
        out, fitted = correct_seams(out, flows, repair, bounds.cuts,
                                    strength=settings.seam_strength, device=device)
        log.stages.append({"stage": "seam colour", "ran": True, "why": f"seams at {repair}",
                           "fits": fitted})
    a = log.analysis
    global_needed = max(a["luma_flicker"], a["chroma_flicker"]) > GLOBAL_FLICKER_GATE
    if gate("global deflicker", settings.global_strength, global_needed,
            "luma/chroma flicker below the gate"):
        out = global_deflicker(out, segments, strength=settings.global_strength,
                               sigma=settings.temporal_sigma,
                               protect_fades=settings.protect_fades, device=device,
                               hooks=hooks)
        log.stages.append({"stage": "global deflicker", "ran": True})
    local_needed = a.get("local_residual_pct", 0.0) > LOCAL_RESIDUAL_GATE
    if gate("local deflicker", settings.local_strength, local_needed,
            "no blotchy brightness change along the motion"):
        out = local_deflicker(out, flows, segments, strength=settings.local_strength,
                              device=device, hooks=hooks)
        log.stages.append({"stage": "local deflicker", "ran": True})
    shimmer_needed = a.get("shimmer_residual", 0.0) > SHIMMER_RESIDUAL_GATE
    if gate("shimmer", settings.shimmer_strength, shimmer_needed,
            "low-band texture follows the motion"):
        out = reduce_shimmer(out, flows, segments, alpha=min(settings.shimmer_strength, 0.95),
                             full_band=settings.shimmer_full_band, device=device,
                             hooks=hooks)
        log.stages.append({"stage": "shimmer", "ran": True})
    if out is frames:
        out = frames.clone()
    return out, log


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 99.0 if mse <= 1e-12 else 10 * math.log10(1.0 / mse)
