"""Frame-consistency post-pass and consistency-report throughput (frames/s) at 480x832.

Not a test. Run: ``OMP_NUM_THREADS=2 python bench/consistency_throughput.py [--frames 17]``.
Measures on CPU, and on CUDA when available. The clip is synthetic (pan + moving object)
with 5 % global flicker and low-band shimmer, so the gated stages actually run; the forced run
executes every stage.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from comfyui_videodit.consistency import synthetic as S
from comfyui_videodit.consistency.postpass import PostPassSettings, run_postpass
from comfyui_videodit.consistency.report import consistency_report


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=832)
    args = ap.parse_args()
    clean = S.clean_clip(S.ClipSpec(frames=args.frames, height=args.height, width=args.width,
                                    pan=(2.0, 0.5), object_speed=(3.0, 0.0)))
    clip = S.shimmer(S.global_flicker(clean))
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{platform.machine()}, clip {args.frames}x{args.height}x{args.width}")
    print("| device | post-pass (gated) | post-pass (all stages) | report |")
    print("|---|---|---|---|")
    for device in devices:
        frames = clip.to(device)
        if device.type == "cuda":  # warm-up: kernels, allocator
            run_postpass(frames[:3], settings=PostPassSettings(device="cuda"))
        (_, log), t_gated = timed(lambda: run_postpass(
            frames, settings=PostPassSettings(device=str(device))), device)
        _, t_all = timed(lambda: run_postpass(
            frames, settings=PostPassSettings(device=str(device), always_run=True)), device)
        _, t_rep = timed(lambda: consistency_report(frames, fps=16.0, device=device), device)
        ran = [s["stage"] for s in log.stages if s["ran"]]
        n = args.frames
        print(f"| {device.type} | {n / t_gated:.2f} fps ({t_gated:.1f} s; ran {', '.join(ran)}) "
              f"| {n / t_all:.2f} fps ({t_all:.1f} s) | {n / t_rep:.2f} fps ({t_rep:.1f} s) |")


if __name__ == "__main__":
    main()
