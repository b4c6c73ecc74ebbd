"""Wan DiT forward: ours vs diffusers (and ComfyUI's native Wan) in one process, same weights,
each as a fraction of the machine's matmul floor.

Wan 2.1 1.3B width (dim 1536, 12 heads, ffn 8960) cut to 4 layers, latent 16x3x32x32 (768
tokens), 512 text tokens of width 4096, batch 1, fp32 and bf16.

Rows per dtype:

* ``ours``: one forward as the network runs without a sampling run (everything computed).
* ``ours, text K/V reused``: a forward inside a sampling run after its first step: the text's
  cross-attention keys/values come from the run's cache (``CrossAttentionCache``), so the text
  embedding and the key/value projections of the text are skipped.
* ``ours, compiled blocks, text K/V reused`` (with ``--compile``): the same, each block run
  through ``torch.compile`` (the Speed Options node's ``compile_blocks``); compiled during
  the warm-up, which is not timed.
* ``diffusers``: ``WanTransformer3DModel`` with the same weights (converted with our key table).
* ``comfyui``: ``comfy.ldm.wan.model.WanModel`` from the checkout given with ``--comfyui DIR``
  (its own file layout is Wan's original one, so it loads our state dict as it is).
* ``matmul floor``: the same matrix products alone, back to back: for every linear layer the
  forward runs, one ``mm`` of the same shape and dtype (no bias), plus attention's ``QK^T`` and
  ``AV`` products per head. ``floor / time`` is the fraction of the floor an implementation
  reaches (1.0 = nothing but matmul time). Rows that reuse the text K/V are compared with the
  floor less the text-side products they skip.

Each (implementation, dtype) runs two warm-up calls then ``--repeats`` timed forwards, all
interleaved so machine load hits every row alike. Times are medians; the ratios are medians of
the per-round ratios (rows of one round run seconds apart, under the same load). "err" is the max
abs difference to our fp32 output over its std (bf16 rows: the rounding error of bf16).

Run: ``OMP_NUM_THREADS=2 python bench/dit_forward.py [--compile] [--comfyui /path/to/ComfyUI]``
(CPU; a few minutes). ComfyUI's module is imported from the checkout into this process, so it
runs on this environment's torch (a checkout from Oct 2025 imports with torch 2.13). Record the
table in bench/README.md.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from comfyui_videodit.families.speed_options import BlockCompiler
from comfyui_videodit.model_loaders.wan_dit_keys import diffusers_to_original
from comfyui_videodit.networks.wan_dit import CrossAttentionCache, WanDiT, WanDiTConfig

DIM, HEADS, FFN, TEXT_DIM, TEXT_TOKENS = 1536, 12, 8960, 4096, 512
LATENT = (1, 16, 3, 32, 32)     # -> 3 x 16 x 16 = 768 tokens


def build_reference(layers: int):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    reference = WanTransformer3DModel(num_attention_heads=HEADS, attention_head_dim=DIM // HEADS,
                                      in_channels=16, out_channels=16, ffn_dim=FFN,
                                      num_layers=layers).eval()
    with torch.no_grad():
        for name, param in reference.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            param.copy_(base + 0.02 * torch.randn_like(param))
    return reference


def build_ours(layers: int, state: dict) -> WanDiT:
    ours = WanDiT(WanDiTConfig(dim=DIM, ffn_dim=FFN, num_heads=HEADS, num_layers=layers)).eval()
    ours.load_state_dict(state, strict=True)
    return ours


def build_comfyui(folder: str, layers: int, state: dict, dtype: torch.dtype):
    """ComfyUI's WanModel with weights in ``dtype`` (its patch embedding stays float32, as
    ComfyUI builds it)."""
    sys.path.insert(0, folder)
    from comfy.cli_args import args

    if not torch.cuda.is_available():
        args.cpu = True  # before comfy.model_management is imported: no GPU probing
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    model = WanModel(model_type="t2v", patch_size=(1, 2, 2), text_len=TEXT_TOKENS, in_dim=16,
                     dim=DIM, ffn_dim=FFN, freq_dim=256, text_dim=TEXT_DIM, out_dim=16,
                     num_heads=HEADS, num_layers=layers, dtype=dtype,
                     operations=comfy.ops.disable_weight_init).eval()
    model.load_state_dict(state, strict=True)
    return model


def comfyui_attention_name(folder: str) -> str:
    import comfy.ldm.modules.attention as attention

    return attention.optimized_attention.__name__


def matmul_shapes(layers: int, batch: int = 1) -> tuple[list, list, list]:
    """(linear (rows, in, out) run every forward, linear shapes on the text side only,
    attention (batch*heads, queries, keys, head_dim)) for this configuration."""
    tokens = LATENT[2] * (LATENT[3] // 2) * (LATENT[4] // 2)
    video, text = batch * tokens, batch * TEXT_TOKENS
    every = [(video, 64, DIM), (batch, 256, DIM), (batch, DIM, DIM), (batch, DIM, 6 * DIM),
             (video, DIM, 64)]  # patch embedding, time embedding and projection, head
    text_side = [(text, TEXT_DIM, DIM), (text, DIM, DIM)]  # text embedding
    attention = []
    for _ in range(layers):
        every += [(video, DIM, DIM)] * 4                    # self q, k, v, o
        every += [(video, DIM, DIM)] * 2                    # cross q, o
        every += [(video, DIM, FFN), (video, FFN, DIM)]     # FFN
        text_side += [(text, DIM, DIM)] * 2                 # cross k, v of the text
        attention += [(batch * HEADS, tokens, tokens, DIM // HEADS),
                      (batch * HEADS, tokens, TEXT_TOKENS, DIM // HEADS)]
    return every, text_side, attention


def matmul_floor(layers: int, dtype: torch.dtype, *, text_side: bool = True) -> Callable:
    every, text, attention = matmul_shapes(layers)
    linear = every + (text if text_side else [])
    g = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(m, k, generator=g).to(dtype), torch.randn(n, k, generator=g).to(dtype))
             for m, k, n in linear]
    products = [(torch.randn(b, q, d, generator=g).to(dtype),
                 torch.randn(b, kv, d, generator=g).to(dtype)) for b, q, kv, d in attention]

    def run():
        for a, w in pairs:
            torch.mm(a, w.t())
        for q, k in products:
            scores = torch.bmm(q, k.transpose(1, 2))      # QK^T
            torch.bmm(scores, k)                          # AV (values shaped like the keys)
    return run


def gflop(layers: int, *, text_side: bool = True) -> float:
    every, text, attention = matmul_shapes(layers)
    linear = every + (text if text_side else [])
    total = sum(2 * m * k * n for m, k, n in linear)
    total += sum(2 * 2 * b * q * kv * d for b, q, kv, d in attention)
    return total / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--comfyui", metavar="DIR", help="a ComfyUI checkout: time its WanModel")
    parser.add_argument("--compile", action="store_true",
                        help="also time our blocks through torch.compile (compiles first: slow)")
    args = parser.parse_args()

    reference = build_reference(args.layers)
    state = {diffusers_to_original(k): v for k, v in reference.state_dict().items()}
    state = {k: v for k, v in state.items() if k}
    ours = build_ours(args.layers, state)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*LATENT, generator=gen)
    context = torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=gen)
    timestep = torch.tensor([700.0])
    with torch.inference_mode():
        truth = ours(x, timestep, context).float()

    print(f"torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}, "
          f"{args.layers} layers, 768 tokens; matmul work {gflop(args.layers):.0f} GFLOP "
          f"({gflop(args.layers, text_side=False):.0f} without the text side)")
    print("| dtype | implementation | time (s) | x diffusers | floor / time | err / std |")
    print("|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
        ours.to(dtype)
        reference.to(dtype)
        xd, cd = x.to(dtype), context.to(dtype)
        cache = CrossAttentionCache()
        runs = {
            "ours": lambda: ours(xd, timestep, cd),
            "ours, text K/V reused": lambda: ours(xd, timestep, cd, cross_cache=cache),
            "diffusers": lambda: reference(xd, timestep, cd, return_dict=False)[0],
        }
        if args.compile:
            blocks = BlockCompiler()(ours.blocks)
            compiled_cache = CrossAttentionCache()
            runs["ours, compiled blocks, text K/V reused"] = lambda: ours(
                xd, timestep, cd, cross_cache=compiled_cache, block_calls=blocks)
        if args.comfyui:
            comfy = build_comfyui(args.comfyui, args.layers, state, dtype)
            runs["comfyui"] = lambda: comfy(xd, timestep, cd)
        runs["matmul floor"] = matmul_floor(args.layers, dtype)
        runs["matmul floor, text side skipped"] = matmul_floor(args.layers, dtype,
                                                               text_side=False)
        times: dict[str, list[float]] = {label: [] for label in runs}
        outputs = {}
        with torch.inference_mode():
            for label, run in runs.items():
                # warm-up: the first call fills the text cache (and compiles), the second
                # runs from the cache (and compiles that case)
                run()
                outputs[label] = run()
            for _ in range(args.repeats):
                for label, run in runs.items():
                    start = time.perf_counter()
                    run()
                    times[label].append(time.perf_counter() - start)
        median = {label: statistics.median(t) for label, t in times.items()}

        def ratio(label: str, base: str) -> float:
            # per round, then the median: both taken seconds apart, under the same load
            return statistics.median(a / b for a, b in zip(times[label], times[base]))

        for label in runs:
            if label.startswith("matmul floor"):
                print(f"| {name} | {label} | {median[label]:.3f} | "
                      f"{ratio(label, 'diffusers'):.2f} | 1.00 | |")
                continue
            floor = ("matmul floor, text side skipped" if "reused" in label
                     else "matmul floor")
            error = ((outputs[label].float() - truth).abs().max() / truth.std()).item()
            print(f"| {name} | {label} | {median[label]:.3f} | "
                  f"{ratio(label, 'diffusers'):.2f} | {ratio(floor, label):.2f} | "
                  f"{error:.1e} |", flush=True)
    if args.comfyui:
        print(f"ComfyUI attention: {comfyui_attention_name(args.comfyui)}")


if __name__ == "__main__":
    main()
