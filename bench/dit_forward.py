"""Wan DiT forward: ours vs diffusers' ``WanTransformer3DModel`` in one process, same weights.

Wan 2.1 1.3B width (dim 1536, 12 heads, ffn 8960) cut to 4 layers, latent 16x3x32x32 (768
tokens), 512 text tokens of width 4096, batch 1, fp32 and bf16. Each (implementation, dtype)
runs one warm-up then ``--repeats`` timed forwards, interleaved ours/diffusers so machine load
hits both alike; the median is reported with the max error between the two outputs.

Run: ``OMP_NUM_THREADS=2 python bench/dit_forward.py`` (CPU; a few minutes). Record the table in
bench/README.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from comfyui_videodit.model_loaders.wan_dit_keys import diffusers_to_original
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig


def build(layers: int, dim: int, heads: int, ffn: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    reference = WanTransformer3DModel(num_attention_heads=heads, attention_head_dim=dim // heads,
                                      in_channels=16, out_channels=16, ffn_dim=ffn,
                                      num_layers=layers).eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            param.copy_(base + 0.02 * torch.randn_like(param))
    ours = WanDiT(WanDiTConfig(dim=dim, ffn_dim=ffn, num_heads=heads, num_layers=layers)).eval()
    state = {diffusers_to_original(k): v for k, v in reference.state_dict().items()}
    ours.load_state_dict({k: v for k, v in state.items() if k}, strict=True)
    return ours, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="fp32,bf16")
    args = parser.parse_args()

    ours, reference = build(args.layers, 1536, 12, 8960)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 3, 32, 32, generator=gen)
    context = torch.randn(1, 512, 4096, generator=gen)
    timestep = torch.tensor([700.0])
    print(f"torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}, "
          f"{args.layers} layers, 768 tokens")
    print("| dtype | ours (s) | diffusers (s) | ours/diffusers | max err / std |")
    print("|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        ours.to(dtype)
        reference.to(dtype)
        runs = {
            "ours": lambda: ours(x.to(dtype), timestep, context.to(dtype)),
            "diffusers": lambda: reference(x.to(dtype), timestep, context.to(dtype),
                                           return_dict=False)[0],
        }
        times: dict[str, list[float]] = {"ours": [], "diffusers": []}
        outputs = {}
        with torch.inference_mode():
            for label, run in runs.items():
                outputs[label] = run().float()  # warm-up
            for _ in range(args.repeats):
                for label, run in runs.items():
                    start = time.perf_counter()
                    run()
                    times[label].append(time.perf_counter() - start)
        ours_s, ref_s = (statistics.median(times[k]) for k in ("ours", "diffusers"))
        error = ((outputs["ours"] - outputs["diffusers"]).abs().max()
                 / outputs["diffusers"].std()).item()
        print(f"| {name} | {ours_s:.3f} | {ref_s:.3f} | {ours_s / ref_s:.2f} | {error:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
