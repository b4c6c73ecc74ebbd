"""The consistency report: overall score, verdict table (Markdown + JSON), worst frames, plot."""
from __future__ import annotations

import json
import math

import torch

from ..core.hooks import NO_HOOKS, Hooks
from .metrics import (DESCRIPTIONS, SEGMENT_DESCRIPTIONS, MetricsResult, bounds_of,
                      compute_metrics, subscore, verdict_of)

STATIC_SCORE_CAP = 0.6   # a clip without motion cannot score as good video


def build_report(result: MetricsResult) -> dict:
    rows = []
    scores = []
    for name, value in result.values.items():
        verdict = verdict_of(name, value)
        direction, good, fail, unit, warn_only = bounds_of(name)
        rows.append({"metric": name, "value": value, "unit": unit, "verdict": verdict,
                     "good": f"{'<' if direction == 'lower' else '>'} {good:g}",
                     "fail": f"{'>' if direction == 'lower' else '<'} {fail:g}"
                             + (" (warn only)" if warn_only else ""),
                     "meaning": DESCRIPTIONS.get(name) or SEGMENT_DESCRIPTIONS[name]})
        sc = subscore(name, value)
        if sc is not None and not warn_only:
            scores.append(sc)
    dyn = "good" if result.dynamic else "warn"
    rows.append({"metric": "dynamic", "value": bool(result.dynamic), "unit": "flag",
                 "verdict": dyn, "good": "moving", "fail": "static -> warn",
                 "meaning": DESCRIPTIONS["dynamic"]})
    score = sum(scores) / len(scores) if scores else 0.0
    if not result.dynamic:
        score = min(score, STATIC_SCORE_CAP)
    verdicts = [r["verdict"] for r in rows]
    overall = "fail" if "fail" in verdicts else ("warn" if "warn" in verdicts else "good")
    return {"score": round(score, 4), "verdict": overall, "metrics": rows,
            "worst_frames": worst_frames(result), "details": _clean(result.extras),
            "notes": list(result.notes)}


def worst_frames(result: MetricsResult, k: int = 5) -> list[dict]:
    """Frames ranked by their worst per-frame problem, each scaled by its fail threshold."""
    pf = result.per_frame
    t = len(pf["luma_mean"])
    badness = [0.0] * t
    why = [""] * t

    def consider(i, value, scale, label):
        if value is None or (isinstance(value, float) and math.isnan(value)) or not 0 <= i < t:
            return
        v = value / scale
        if v > badness[i]:
            badness[i], why[i] = v, label

    for i, v in enumerate(pf.get("luma_d2", [])):
        consider(i, v, 1.5 * math.sqrt(6), "brightness jump")
    for i, v in enumerate(pf.get("warp_mae", [])):
        consider(i + 1, v, 3.0, "motion-compensated error")
    for i, v in enumerate(pf.get("step_de", [])):
        med = sorted(pf["step_de"])[len(pf["step_de"]) // 2] if pf["step_de"] else 0
        consider(i + 1, v / max(med, 0.05), 10.0, "colour step (cut or seam)")
    for i, v in enumerate(pf.get("motion_err", [])):
        consider(i, v, 255 * 0.02, "motion not smooth")
    order = sorted(range(t), key=lambda i: -badness[i])[:k]
    return [{"frame": i, "severity": round(badness[i], 3), "problem": why[i]}
            for i in order if badness[i] > 0]


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return None if math.isnan(obj) else round(obj, 5)
    return obj


def to_json(report: dict) -> str:
    return json.dumps(_clean(report), indent=2)


def summary_line(report: dict) -> str:
    """One line: score, verdict and the metrics that are not good (a terminal, a node's face)."""
    line = f"Consistency score {report['score']:.2f} — {report['verdict'].upper()}"
    problems = [f"{r['metric']} {r['verdict']}" for r in report["metrics"]
                if r["verdict"] in ("warn", "fail")]
    return line + (f" ({', '.join(problems)})" if problems else "")


def to_markdown(report: dict) -> str:
    lines = [f"**Consistency score {report['score']:.2f} — {report['verdict'].upper()}**", "",
             "| metric | value | verdict | good | fail | what it measures |",
             "|---|---|---|---|---|---|"]
    for r in report["metrics"]:
        v = r["value"]
        text = "n/a" if v is None else (str(v).lower() if isinstance(v, bool) else f"{v:.4g}")
        lines.append(f"| {r['metric']} | {text} | {r['verdict']} | {r['good']} | {r['fail']} |"
                     f" {r['meaning']} |")
    d = report["details"]
    lines += ["", f"Flow from: {d.get('flow_source', '?')}; static pixels: "
                  f"{100 * (d.get('static_frac') or 0):.0f} %; cuts at {d.get('cuts', [])}; "
                  f"colour jumps (seams) at {d.get('seams', [])}."]
    lines += _segment_tables(d)
    if report["worst_frames"]:
        lines += ["", "Worst frames: " + ", ".join(
            f"{w['frame']} ({w['problem']})" for w in report["worst_frames"])]
    for n in report["notes"]:
        lines.append(f"- {n}")
    return "\n".join(lines)


def _segment_tables(details: dict) -> list[str]:
    """Per-boundary seams and per-segment colour, when the segment starts were given."""
    lines = []
    if details.get("boundaries"):
        lines += ["", f"Seams at segment boundaries (median step "
                      f"{details.get('boundary_median_step_de') or 0:.3g} dE):", "",
                  "| frame | found by | cross-fade | largest step (dE) | / median |"
                  " change along motion (dE) | luma change | verdict |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {b['frame']} | {'segments input' if b['source'] == 'given' else 'detector'}"
                  f" | {b['ramp']} | {b['step_de']:.3g} | {b['ratio']:.3g} | {b['jump_de']:.3g} |"
                  f" {b['luma_step']:.3g} | {b['verdict']} |" for b in details["boundaries"]]
    if details.get("segments"):
        lines += ["", "Segments against the first (plain: mean colours, new content included; "
                      "along motion: the same surfaces followed; drift: the smaller):", "",
                  "| segment | frames | drift (dE) | plain (dE) | along motion (dE) | Lab mean |"
                  " mean luma | contrast | luma flicker |", "|---|---|---|---|---|---|---|---|---|"]
        for g in details["segments"]:
            flick = "n/a" if g["luma_flicker"] is None else f"{g['luma_flicker']:.3g}"
            lab = " / ".join(f"{v:.1f}" for v in g["lab_mean"])
            lines.append(f"| {g['segment']} | {g['start']}-{g['start'] + g['frames'] - 1} |"
                         f" {g['drift_de']:.3g} | {g['plain_de']:.3g} | {g['tracked_de']:.3g} |"
                         f" {lab} | {g['luma_mean']:.1f} | {g['contrast']:.1f} | {flick} |")
    return lines


def plot(result: MetricsResult, report: dict, width: int = 960, height: int = 600
         ) -> torch.Tensor:
    """Per-frame panels as an IMAGE tensor ``[1, H, W, 3]`` (Pillow, imported here)."""
    from PIL import Image, ImageDraw

    pf = result.per_frame
    panels = [("mean luma (code values)", pf.get("luma_mean", []), None),
              ("|2nd difference of luma| (flicker)", pf.get("luma_d2", []), 1.5 * math.sqrt(6)),
              ("warp error per pair (code values)", pf.get("warp_mae", []), 3.0),
              ("colour step per pair (dE)", pf.get("step_de", []), None),
              ("motion-smoothness error (code values)", pf.get("motion_err", []), 255 * 0.02)]
    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    title = f"VideoDiT consistency: score {report['score']:.2f} ({report['verdict']})"
    draw.text((10, 6), title, fill=(0, 0, 0))
    if result.boundaries.given:
        draw.text((width - 200, 6), "blue lines: segment starts", fill=(90, 130, 190))
    top, left, right = 24, 50, width - 10
    ph = (height - top - 20) // len(panels)
    t = len(pf.get("luma_mean", [])) or 1
    colours = [(30, 90, 200), (200, 60, 40), (40, 150, 60), (150, 60, 170), (200, 140, 20)]
    for n, (label, series, fail) in enumerate(panels):
        y0 = top + n * ph
        y1 = y0 + ph - 16
        draw.rectangle((left, y0 + 12, right, y1), outline=(160, 160, 160))
        draw.text((left + 4, y0), label, fill=(40, 40, 40))
        vals = [v for v in series if v is not None and not math.isnan(v)]
        if not vals:
            draw.text((left + 10, y0 + 20), "n/a", fill=(120, 120, 120))
            continue
        lo, hi = min(vals + [0.0]), max(vals + ([fail] if fail else []))
        hi = hi if hi > lo else lo + 1.0
        draw.text((4, y0 + 12), f"{hi:.3g}", fill=(90, 90, 90))
        draw.text((4, y1 - 10), f"{lo:.3g}", fill=(90, 90, 90))
        offset = 0 if len(series) == t else 0.5  # pair series sit between frames

        def xy(i, v):
            x = left + (right - left) * ((i + offset) / max(t - 1, 1))
            y = y1 - (y1 - y0 - 14) * (v - lo) / (hi - lo)
            return x, y

        if fail:
            _, yf = xy(0, fail)
            draw.line((left, yf, right, yf), fill=(230, 120, 120))
            draw.text((right - 60, yf - 11), "fail", fill=(200, 80, 80))
        for c in result.boundaries.cuts:
            x, _ = xy(c - offset - 0.5, lo)
            draw.line((x, y0 + 12, x, y1), fill=(120, 120, 120))
        for c in result.boundaries.given:  # segment starts: where rendered pieces meet
            x, _ = xy(c - offset - 0.5, lo)
            draw.line((x, y0 + 12, x, y1), fill=(120, 170, 220))
        pts = [xy(i, v) for i, v in enumerate(series) if v is not None and not math.isnan(v)]
        if len(pts) > 1:
            draw.line(pts, fill=colours[n % len(colours)], width=2)
        for p in pts:
            draw.ellipse((p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2), fill=colours[n % len(colours)])
    draw.text((left, height - 14), f"frame 0 .. {t - 1}", fill=(60, 60, 60))
    import numpy as np

    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return arr.unsqueeze(0)


def consistency_report(frames: torch.Tensor, *, fps: float = 16.0,
                       source: torch.Tensor | None = None, segments=None, device=None,
                       with_plot: bool = True, hooks: Hooks = NO_HOOKS
                       ) -> tuple[dict, MetricsResult, torch.Tensor | None]:
    """Metrics + report dict (+ plot) of ``frames`` ``[T, 3, H, W]``; ``source`` supplies motion,
    ``segments`` (start frames of rendered pieces) adds per-boundary and per-segment metrics."""
    if source is not None and source.shape[-2:] != frames.shape[-2:]:
        import torch.nn.functional as F

        source = F.interpolate(source.float(), size=frames.shape[-2:], mode="bilinear",
                               align_corners=False, antialias=True)
    result = compute_metrics(frames, fps=fps, flow_frames=source, segments=segments,
                             device=device, hooks=hooks)
    report = build_report(result)
    image = plot(result, report) if with_plot else None
    return report, result, image
