"""Does rendering the same workflow again and again grow the process's resident memory?

Renders the demo text-to-video workflow ten times in one process (headless, as the CLI does)
and prints the RSS after each run; then the same with a Wan 1.3B-width random-weight DiT
(dim 1536, 4 layers, fp16 file) put behind VideoDiT Block Swap (2 blocks on the device), so
streaming, pinned copies and the prompt and plan paths all run ten times. Target: the RSS
after run 10 is within 5% of the RSS after run 2 (run 1 pays for imports, kernels and caches).

Run: ``python bench/ram_hygiene.py [--runs 10]``. Record it in bench/README.md.
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "example_workflows" / "api" / "demo_text_to_video.json"


def write_wide_model(folder: Path) -> str:
    from safetensors.torch import save_file

    from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

    config = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=4, text_dim=128)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {f"model.diffusion_model.{k}": (torch.randn(s, generator=generator) * 0.02)
             .to(torch.float16) for k, s in shapes.items()}
    (folder / "diffusion_models").mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "diffusion_models" / "wide_random.safetensors"))
    return "wide_random.safetensors"


def with_block_swap(workflow: dict, model_name: str) -> dict:
    workflow = json.loads(json.dumps(workflow))
    loader = next(k for k, v in workflow.items() if v["class_type"] == "VideoDiTModelLoader")
    sampler = next(k for k, v in workflow.items() if v["class_type"] == "VideoDiTSampler")
    workflow[loader]["inputs"]["model_name"] = model_name
    workflow["90"] = {"class_type": "VideoDiTBlockSwap",
                      "inputs": {"model": [loader, 0], "blocks_on_device": 2, "prefetch": 1}}
    workflow[sampler]["inputs"]["model"] = ["90", 0]
    workflow[sampler]["inputs"]["steps"] = 4
    return workflow


def render_many(label: str, workflow: dict, runs: int, **folders) -> None:
    from comfyui_videodit.cli.run import run_workflow

    process = psutil.Process()
    rss = []
    for _ in range(runs):
        run_workflow(workflow, stream=io.StringIO(), **folders)
        rss.append(process.memory_info().rss)
    growth = (rss[-1] - rss[1]) / rss[1]
    print(f"| {label} | {' / '.join(f'{r / 2**20:.0f}' for r in rss)} | "
          f"{growth * 100:+.1f}% |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    workflow = json.loads(WORKFLOW.read_text())
    print("| workflow | RSS after each run (MB) | run 10 vs run 2 |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as out:
        render_many("demo text-to-video", workflow, args.runs, output_dir=out)
    with tempfile.TemporaryDirectory() as models, tempfile.TemporaryDirectory() as out:
        name = write_wide_model(Path(models))
        render_many("1.3B-width random DiT + Block Swap (2 on device)",
                    with_block_swap(workflow, name), args.runs, output_dir=out,
                    models_dir=models)


if __name__ == "__main__":
    main()
