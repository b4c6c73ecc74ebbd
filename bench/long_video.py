"""Long clips on the bundled demo model: naive chaining against continuation and context windows.

For each of ``--prompts`` held-out prompts (``demo/evaluate.py``) and each ``--lengths`` value,
``render_long_video`` makes the clip with every ``--methods`` entry, in windows of 17 frames (the
demo model's training length), text-to-video from the prompt, seed = the prompt's index. Each
clip is then measured two ways:

* VideoDiT Consistency Report with the clip's segments: the seam at each boundary
  (``boundary_seam``), the colour drift of each segment from the first (``segment_drift_de``),
  luma and chroma flicker, and the verdicts;
* the demo detector (``demo/detector.py``) on the first and on the last 17 frames alone (a
  window each): is the prompted object colour found, and (linear motions) does it move in the
  prompted direction.

``--postpass`` also runs VideoDiT Frame Consistency with the segments on every clip and measures
the result again (rows "<method> + post-pass").

The targets: no clip of ours fails the report on seams or drift where naive chaining does, and
the detector's colour and direction rates in the last window stay within 5 points of the first.

Run: ``OMP_NUM_THREADS=1 nice -n 5 python bench/long_video.py --json long_video.json`` (CPU;
2-5 s per 17-frame window, some 50 windows per prompt, 40 minutes at the defaults; on a loaded
2-core machine one thread is several times faster than two).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from comfyui_videodit.consistency.metrics import compute_metrics
from comfyui_videodit.consistency.postpass import PostPassSettings, run_postpass
from comfyui_videodit.consistency.report import build_report
from comfyui_videodit.demo import evaluate as demo
from comfyui_videodit.demo.clips import LINEAR_MOTIONS
from comfyui_videodit.samplers.long_video import METHODS, NAIVE, plan_long_video, render_long_video

WINDOW = 17


def overlap_for(method: str, length: int, wanted: int) -> int:
    """``wanted``, or the next 4k+1 overlap whose windows reach ``length`` exactly (continued
    windows add window - overlap frames each; context windows and naive chaining take any)."""
    for overlap in range(wanted, WINDOW, 4):
        try:
            plan_long_video(length, WINDOW, overlap, method)
            return overlap
        except ValueError:
            continue
    raise SystemExit(f"no overlap from {wanted} reaches {length} frames with method {method!r}")


def detector_scores(spec, frames: torch.Tensor) -> dict:
    """Detector verdicts on the first and on the last window's worth of ``frames`` (IMAGE).

    Whole windows rather than each method's own segments, whose lengths differ (a continued
    window's first frames belong to the cross-fade): every method is judged on the same spans.
    """
    first = demo.score_text_to_video(spec, frames[:WINDOW])
    last = demo.score_text_to_video(spec, frames[-WINDOW:])
    return {"colour_first": first.colour, "colour_last": last.colour,
            "direction_first": first.direction, "direction_last": last.direction}


def measure(frames: torch.Tensor, segments) -> dict:
    """The report's segment, seam, drift and flicker numbers and verdicts of ``frames`` (IMAGE)."""
    result = compute_metrics(frames.permute(0, 3, 1, 2).contiguous(), segments=segments)
    report = build_report(result)
    verdicts = {r["metric"]: r["verdict"] for r in report["metrics"]}
    v = result.values
    return {"verdict": report["verdict"], "seam": v["boundary_seam"],
            "drift": v["segment_drift_de"], "luma_flicker": v["luma_flicker"],
            "chroma_flicker": v["chroma_flicker"],
            "fail_seam": verdicts["boundary_seam"] == "fail",
            "fail_drift": verdicts["segment_drift_de"] == "fail",
            "failing": sorted(k for k, x in verdicts.items() if x == "fail"),
            "boundaries": result.extras.get("boundaries"),
            "segments": [{k: s[k] for k in ("start", "drift_de", "plain_de", "luma_mean")}
                         for s in result.extras.get("segments", [])]}


def render_clip(pipeline, spec_caption: str, index: int, method: str, length: int, overlap: int,
                steps: int):
    conditioning = pipeline.conditioning(spec_caption)
    started = time.perf_counter()
    with torch.inference_mode():
        clip = render_long_video(pipeline.model, conditioning, pipeline.vae, width=demo.SIZE,
                                 height=demo.SIZE, length=length, window=WINDOW, overlap=overlap,
                                 method=method, seed=index, steps=steps, cfg=demo.CFG,
                                 shift=demo.SHIFT, sampler=demo.SAMPLER)
    return clip, time.perf_counter() - started


def run(args) -> list[dict]:
    pipeline = demo.DemoPipeline()
    records = []
    for index, case in enumerate(demo.held_out_specs(args.prompts, seed=args.seed)):
        for length in args.lengths:
            for method in args.methods:
                overlap = overlap_for(method, length, args.overlap) if method != NAIVE else 1
                clip, seconds = render_clip(pipeline, case.caption, index, method, length,
                                            overlap, args.steps)
                segments = clip.segments()
                variants = [(method, clip.images)]
                if args.postpass:
                    with torch.inference_mode():
                        repaired, _ = run_postpass(clip.images.permute(0, 3, 1, 2).contiguous(),
                                                   settings=PostPassSettings(),
                                                   segments=segments)
                    variants.append((f"{method} + post-pass",
                                     repaired.permute(0, 2, 3, 1).contiguous()))
                for label, frames in variants:
                    record = {"prompt": index, "caption": case.caption, "method": label,
                              "motion": case.spec.objects[0].motion,
                              "length": length, "overlap": overlap, "starts": segments.starts,
                              "seconds": round(seconds, 1),
                              **measure(frames, segments),
                              **detector_scores(case.spec, frames)}
                    records.append(record)
                    print(f"[{index + 1}/{args.prompts}] {label}, {length} frames: "
                          f"{record['verdict']}, seam {record['seam']:.2f}, drift "
                          f"{record['drift']:.2f}, {seconds:.0f} s", flush=True)
    return records


def _rate(values) -> str:
    values = [v for v in values if v is not None]
    return f"{100 * sum(map(bool, values)) / len(values):.0f}%" if values else "-"


def _mean_median(values) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.mean(values):.2f} / {statistics.median(values):.2f}" if values else "-"


def summary_tables(records: list[dict]) -> str:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["length"]), []).append(r)
    lines = ["| method | frames | overlap | clips | seam ratio (mean / median) | segment drift dE |"
             " luma flicker | chroma flicker | fail | fail: seams | fail: drift | s / clip |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, length), rs in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0])):
        lines.append(
            f"| {method} | {length} | {rs[0]['overlap']} | {len(rs)} |"
            f" {_mean_median(r['seam'] for r in rs)} | {_mean_median(r['drift'] for r in rs)} |"
            f" {_mean_median(r['luma_flicker'] for r in rs)} |"
            f" {_mean_median(r['chroma_flicker'] for r in rs)} |"
            f" {_rate(r['verdict'] == 'fail' for r in rs)} | {_rate(r['fail_seam'] for r in rs)} |"
            f" {_rate(r['fail_drift'] for r in rs)} |"
            f" {statistics.mean(r['seconds'] for r in rs):.0f} |")
    lines += ["", "| method | frames | colour, first 17 frames | colour, last 17 |"
                  " colour first / last, object stays in frame | direction, first 17 |"
                  " direction, last 17 | linear clips |",
              "|---|---|---|---|---|---|---|---|"]
    for (method, length), rs in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0])):
        linear = [r for r in rs if r["direction_first"] is not None]
        staying = [r for r in rs if stays_in_frame(r)]
        lines.append(f"| {method} | {length} | {_rate(r['colour_first'] for r in rs)} |"
                     f" {_rate(r['colour_last'] for r in rs)} |"
                     f" {_rate(r['colour_first'] for r in staying)} /"
                     f" {_rate(r['colour_last'] for r in staying)} ({len(staying)} clips) |"
                     f" {_rate(r['direction_first'] for r in linear)} |"
                     f" {_rate(r['direction_last'] for r in linear)} | {len(linear)} |")
    return "\n".join(lines)


def stays_in_frame(record: dict) -> bool:
    """Still, bouncing and growing objects stay in the frame however long the clip; an object
    in linear motion (1-2 px a frame) leaves the 64 px frame within 30-60 frames, after which
    the last window has no object whose colour or direction could be right."""
    return record["motion"] not in LINEAR_MOTIONS


def target_check(records: list[dict]) -> str:
    """Clips failing on seams or drift (ours vs naive) and first-to-last detector changes."""
    lines = []
    naive_fails = {(r["prompt"], r["length"]) for r in records
                   if r["method"] == NAIVE and (r["fail_seam"] or r["fail_drift"])}
    for method in dict.fromkeys(r["method"] for r in records):
        if method == NAIVE:
            continue
        rs = [r for r in records if r["method"] == method]
        failing = [(r["prompt"], r["length"]) for r in rs if r["fail_seam"] or r["fail_drift"]]
        where_naive = [f for f in failing if f in naive_fails]
        lines.append(f"- {method}: {len(failing)} of {len(rs)} clips fail on seams or drift "
                     f"({len(where_naive)} of them where naive chaining fails too; naive fails "
                     f"{len(naive_fails)})")
        for length in sorted({r["length"] for r in rs}):
            at = [r for r in rs if r["length"] == length]
            linear = [r for r in at if r["direction_first"] is not None]

            def points(rows, key):
                values = [bool(r[key]) for r in rows]
                return 100 * sum(values) / len(values) if values else 0.0

            colour = points(at, "colour_last") - points(at, "colour_first")
            staying = [r for r in at if stays_in_frame(r)]
            colour_staying = (points(staying, "colour_last")
                              - points(staying, "colour_first"))
            direction = points(linear, "direction_last") - points(linear, "direction_first")
            ok = abs(colour) <= 5 and abs(direction) <= 5
            lines.append(f"  - {length} frames: last vs first window colour {colour:+.0f} "
                         f"points, direction {direction:+.0f} points "
                         f"({'within' if ok else 'outside'} 5 points); colour of objects "
                         f"that stay in the frame {colour_staying:+.0f} points")
    return "\n".join(lines)


def summarised(paths: list[Path]) -> list[dict]:
    """The records of earlier runs; a later file's rows replace those of the same method,
    prompt and length. Records written before "motion" was kept get it from their prompt."""
    merged: dict[tuple, dict] = {}
    for path in paths:
        saved = json.loads(path.read_text())
        seed = int(saved["args"].get("seed", 0))
        specs = None
        for r in saved["records"]:
            if "motion" not in r:
                specs = specs or demo.held_out_specs(int(saved["args"]["prompts"]), seed=seed)
                r["motion"] = specs[r["prompt"]].spec.objects[0].motion
            merged[(r["method"], r["prompt"], r["length"])] = r
    return list(merged.values())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=20, help="held-out prompts")
    parser.add_argument("--lengths", type=int, nargs="+", default=[65, 129])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--steps", type=int, default=demo.STEPS)
    parser.add_argument("--overlap", type=int, default=5, help="continue / context windows "
                        "overlap; raised to the next 4k+1 that reaches a length if needed")
    parser.add_argument("--seed", type=int, default=0, help="held-out prompt set")
    parser.add_argument("--postpass", action="store_true",
                        help="also measure every clip after VideoDiT Frame Consistency")
    parser.add_argument("--json", type=Path, help="write every clip's numbers here")
    parser.add_argument("--summarise", type=Path, nargs="+", metavar="JSON",
                        help="render nothing: print the tables of earlier --json files "
                             "(later files replace earlier rows of the same method)")
    args = parser.parse_args(argv)
    if args.summarise:
        records = summarised(args.summarise)
        print(f"{summary_tables(records)}\n\n{target_check(records)}")
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, window {WINDOW}, "
          f"steps {args.steps}, prompts {args.prompts}, lengths {args.lengths}")
    started = time.perf_counter()
    records = run(args)
    tables = summary_tables(records)
    check = target_check(records)
    print(f"\n{tables}\n\n{check}\n\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(args).items()},
                                         "records": records, "tables": tables,
                                         "targets": check}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
