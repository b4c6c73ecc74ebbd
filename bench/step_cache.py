"""VideoDiT Step Cache: model evaluations, wall time and fidelity with and without it.

Three parts, all at ``--steps`` (default 30) sampling steps:

1. The three demo workflows (example_workflows/api/demo_*.json) on the bundled demo model, run
   through the pack's own nodes up to VAE Decode, without the cache and with a Step Cache node
   put between the model loader and the sampler, at each ``--thresholds`` value: sampler wall
   time, DiT evaluations, PSNR of the decoded frames against the uncached run.
2. A Wan 1.3B-width random-weight DiT (dim 1536, 12 heads, ffn 8960, ``--layers`` layers),
   text-to-video at 16x5x32x32 latent (1280 tokens), cfg 5: the same columns, PSNR taken
   on the latent.
3. The demo detector's colour, direction and background rates on ``--clips`` held-out prompts,
   uncached vs cached at the first threshold.

Run: ``OMP_NUM_THREADS=2 python bench/step_cache.py`` (CPU, about 15 minutes on 2 cores).
``--measure`` picks the change estimate ("input change" or "output magnitude").
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from comfyui_videodit.cli.executor import execute_prompt
from comfyui_videodit.demo import evaluate as demo
from comfyui_videodit.families import wan
from comfyui_videodit.nodes import NODE_CLASS_MAPPINGS
from comfyui_videodit.nodes.step_cache import VideoDiTStepCache
from comfyui_videodit.nodes.vae import VideoDiTVAEDecode

ROOT = Path(__file__).resolve().parent.parent
DEMO_WORKFLOWS = ("demo_text_to_video", "demo_image_to_video", "demo_video_edit")
SAMPLERS = ("VideoDiTSampler", "VideoDiTFlowEditSampler")
START = [0.2]   # the cache's start_percent (--start)


@contextmanager
def counting_dit_calls():
    """Counts the network evaluations (the family's velocity calls) made inside the block."""
    calls = [0]
    original = wan.WanFamily.velocity

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    wan.WanFamily.velocity = counted
    try:
        yield calls
    finally:
        wan.WanFamily.velocity = original


class CapturedDecode(VideoDiTVAEDecode):
    """VAE Decode as an output node that hands its frames back to the bench."""
    OUTPUT_NODE = True

    def decode(self, *args, **kwargs):
        images = super().decode(*args, **kwargs)[0]
        return {"result": (images,), "ui": {"frames": [images]}}


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float) -> float:
    mse = (a.float() - b.float()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(peak ** 2 / mse)).item()


def demo_prompt(name: str, steps: int, threshold: float | None, measure: str) -> tuple[dict, str]:
    """The workflow's API graph cut at VAE Decode, at ``steps``, optionally with the cache."""
    graph = json.loads((ROOT / "example_workflows" / "api" / f"{name}.json").read_text())
    decode = next(k for k, v in graph.items() if v["class_type"] == "VideoDiTVAEDecode")
    keep, todo = set(), [decode]
    while todo:
        node = todo.pop()
        if node not in keep:
            keep.add(node)
            todo += [str(v[0]) for v in graph[node]["inputs"].values() if isinstance(v, list)]
    graph = {k: copy.deepcopy(v) for k, v in graph.items() if k in keep}
    graph[decode]["class_type"] = "BenchCapturedDecode"
    sampler = next(k for k, v in graph.items() if v["class_type"] in SAMPLERS)
    inputs = graph[sampler]["inputs"]
    if "skip_steps" in inputs:   # FlowEdit: keep the same share of the schedule skipped
        inputs["skip_steps"] = round(inputs["skip_steps"] * steps / inputs["steps"])
    inputs["steps"] = steps
    if threshold is not None:
        graph["cache"] = {"class_type": "VideoDiTStepCache", "inputs": {
            "model": inputs["model"], "threshold": threshold, "start_percent": START[0],
            "end_percent": 1.0, "measure": measure, "max_skips": 3}}
        inputs["model"] = ["cache", 0]
    return graph, sampler


def run_demo_workflow(name: str, steps: int, threshold: float | None, measure: str):
    graph, sampler = demo_prompt(name, steps, threshold, measure)
    classes = dict(NODE_CLASS_MAPPINGS, BenchCapturedDecode=CapturedDecode)
    with counting_dit_calls() as calls:
        result = execute_prompt(graph, classes)
    frames = next(ui["frames"][0] for ui in result.ui.values() if "frames" in ui)
    return frames, result.seconds[sampler], calls[0]


def random_wan_model(layers: int):
    from comfyui_videodit.core.latent_formats import WAN21
    from comfyui_videodit.core.placement import Placement
    from comfyui_videodit.families.base import LoadedWeights
    from comfyui_videodit.families.model import VideoModel
    from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

    torch.manual_seed(0)
    config = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=layers)
    network = WanDiT(config).eval()
    with torch.no_grad():
        for name, param in network.named_parameters():
            base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            param.copy_(base + 0.02 * torch.randn_like(param))
    loaded = LoadedWeights(network, config, "random 1.3B-width", WAN21, torch.float32,
                           "random", [])
    return VideoModel.from_loaded(loaded, wan.WanFamily(), Placement(network, "random"))


def run_random_model(model, steps: int, threshold: float | None, measure: str):
    from comfyui_videodit.core.conditioning import VideoDiTConditioning
    from comfyui_videodit.samplers.denoise import SamplingSettings, sample_video

    if threshold is not None:
        model = VideoDiTStepCache().apply(model, threshold, START[0], 1.0, measure, 3)[0]
    generator = torch.Generator().manual_seed(1)
    cond = VideoDiTConditioning(positive=torch.randn(1, 512, 4096, generator=generator) * 0.1,
                                negative=torch.randn(1, 512, 4096, generator=generator) * 0.1)
    latent = {"samples": torch.zeros(1, 16, 5, 32, 32)}
    started = time.perf_counter()
    with counting_dit_calls() as calls, torch.no_grad():
        out = sample_video(model, cond, latent, SamplingSettings(seed=3, steps=steps, cfg=5.0,
                                                                 shift=5.0))
    return out["samples"], time.perf_counter() - started, calls[0]


def fastest(results):
    """The repeat with the shortest wall time (outputs and counts are the same in each)."""
    return min(results, key=lambda result: result[1])


def table_rows(label: str, runs, peak: float):
    (base_out, base_time, base_calls) = runs[None]
    rows = []
    for threshold, (out, seconds, calls) in runs.items():
        rows.append((label, "off" if threshold is None else f"{threshold:g}", calls,
                     base_calls / calls, seconds, base_time / seconds,
                     psnr(out, base_out, peak) if threshold is not None else float("nan")))
    return rows


def print_table(rows) -> None:
    print("| run | threshold | DiT evals | fewer evals | wall s | speed-up | PSNR vs off (dB) |")
    print("|---|---|---|---|---|---|---|")
    for label, threshold, calls, fewer, seconds, speed, quality in rows:
        shown = "-" if quality != quality else ("inf" if quality == float("inf") else f"{quality:.1f}")
        print(f"| {label} | {threshold} | {calls} | {fewer:.2f}x | {seconds:.2f} | {speed:.2f}x "
              f"| {shown} |")


def detector_rates(clips: int, steps: int, threshold: float | None, measure: str) -> dict:
    pipeline = demo.DemoPipeline()
    if threshold is not None:
        pipeline.model = VideoDiTStepCache().apply(pipeline.model, threshold, START[0], 1.0,
                                                   measure, 3)[0]
    scores = [demo.score_text_to_video(c.spec, pipeline.text_to_video(c.caption, i, steps=steps))
              for i, c in enumerate(demo.held_out_specs(clips, seed=0))]
    linear = [s.direction for s in scores if s.direction is not None]
    return {"colour": demo._rate(s.colour for s in scores),
            "direction": demo._rate(linear),
            "background": demo._rate(s.background for s in scores)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--measure", default="input change")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="demo runs per setting (fastest kept)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["demo", "random", "detector"])
    parser.add_argument("--start", type=float, default=0.2, help="the cache's start_percent")
    parser.add_argument("--skip-uncached-rates", action="store_true")
    args = parser.parse_args(argv)
    START[0] = args.start
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, steps {args.steps}, "
          f"measure {args.measure!r}, start_percent {args.start:g}")
    rows = []
    if "demo" not in args.skip:
        for name in DEMO_WORKFLOWS:
            run_demo_workflow(name, args.steps, None, args.measure)   # warm-up: loads, caches
            runs = {t: fastest(run_demo_workflow(name, args.steps, t, args.measure)
                               for _ in range(args.repeats))
                    for t in [None, *args.thresholds]}
            rows += table_rows(name, runs, peak=1.0)
    if "random" not in args.skip:
        model = random_wan_model(args.layers)
        runs = {t: run_random_model(model, args.steps, t, args.measure)
                for t in [None, *args.thresholds]}
        out = runs[None][0]
        rows += table_rows(f"random 1.3B-width, {args.layers} layers", runs,
                           peak=float(out.max() - out.min()))
    if rows:
        print_table(rows)
    if "detector" not in args.skip:
        threshold = args.thresholds[0]
        print(f"\ndetector rates on {args.clips} held-out text-to-video clips:")
        print("| cache | colour | direction | background |\n|---|---|---|---|")
        settings = [("off", None)] if not args.skip_uncached_rates else []
        for label, t in settings + [(f"threshold {threshold:g}", threshold)]:
            rates = detector_rates(args.clips, args.steps, t, args.measure)
            print(f"| {label} | {rates['colour']} | {rates['direction']} | "
                  f"{rates['background']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
