"""Block swap: time per step and device bytes, all blocks resident vs streamed.

CPU (always): a Wan 1.3B-width DiT (dim 1536, ffn 8960, 12 heads) of 8 layers with random
fp32 weights, one forward (= one step at cfg 1) on a 16x5x32x32 latent (1280 tokens). The
compute device is the CPU too, so streaming costs real copies but nothing overlaps them;
"device bytes" are counted: resident weights plus the streamed copies alive (every copy goes
through ``Transfer.copy``, counted by weak references at the end of each block).

CUDA (when there is one): 14B-shaped random bf16 weights (40 layers, dim 5120), one forward on
a 480x832 latent (``--frames``, default 81), with the blocks the memory plan picks for 12 and
24 GB devices, and all resident when the card holds them: s/step and
``torch.cuda.max_memory_allocated``.

Run: ``python bench/block_swap.py [--repeats 3] [--frames 81]``. Record it in bench/README.md.
"""
from __future__ import annotations

import argparse
import statistics
import time
import weakref

import torch

from comfyui_videodit.core import streaming
from comfyui_videodit.core.streamed_placement import StreamedPlacement
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

GB = 1024 ** 3


class CountedCopies:
    """Live bytes of streamed copies (wraps ``Transfer.copy``)."""

    def __init__(self):
        self.alive: dict[int, int] = {}
        original = streaming.Transfer.copy
        counter = self

        def counted(transfer, tensor):
            out = original(transfer, tensor)
            counter.alive[id(out)] = out.numel() * out.element_size()
            weakref.finalize(out, counter.alive.pop, id(out), None)
            return out

        streaming.Transfer.copy = counted
        self._original = original

    def close(self):
        streaming.Transfer.copy = self._original


def random_network(config: WanDiTConfig, dtype: torch.dtype, device="cpu") -> WanDiT:
    with torch.device("meta"):
        network = WanDiT(config)
    generator = torch.Generator(device).manual_seed(0)
    for module in network.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                values = torch.randn(p.shape, generator=generator, device=device) * 0.02
                module._parameters[name] = torch.nn.Parameter(values.to(dtype).cpu(),
                                                              requires_grad=False)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = torch.ones(b.shape, dtype=b.dtype)
    return network.eval()


def cpu_bench(repeats: int) -> None:
    config = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=8)
    network = random_network(config, torch.float32)
    x = torch.randn(1, 16, 5, 32, 32)
    t, text = torch.full((1,), 700.0), torch.randn(1, 512, 4096)
    blocks = list(network.blocks)
    block_bytes = sum(p.numel() * p.element_size() for p in blocks[0].parameters())
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; 8 layers of "
          f"{block_bytes / 2**20:.0f} MB")
    print("| setting | s/step (median) | peak device weight bytes | vs resident |")
    print("|---|---|---|---|")
    with torch.no_grad():
        expected = network(x, t, text)
    baseline = None
    for blocks_on_device, prefetch in ((8, 1), (4, 1), (2, 1), (1, 0)):
        placement = StreamedPlacement(network, "bench", blocks, blocks_on_device=blocks_on_device,
                                      prefetch=prefetch)
        counter = CountedCopies()
        peak = [0]
        resident = placement.base_bytes + sum(placement.block_sizes[:placement.resident_blocks])

        def count(module, args, output):
            peak[0] = max(peak[0], resident + sum(counter.alive.values()))

        handles = [b.register_forward_hook(count) for b in blocks]
        times = []
        with torch.no_grad(), placement.use() as module:
            for _ in range(repeats):
                start = time.perf_counter()
                out = module(x, t, text)
                times.append(time.perf_counter() - start)
        for handle in handles:
            handle.remove()
        counter.close()
        assert torch.equal(out, expected)
        median = statistics.median(times)
        baseline = baseline or median
        label = ("all 8 resident" if not placement.streams else
                 f"blocks_on_device {blocks_on_device}: {placement.resident_blocks} resident + "
                 f"{placement.slots} streaming")
        print(f"| {label} | {median:.2f} | {peak[0] / 2**20:.0f} MB | {median / baseline:.2f}x |",
              flush=True)


def cuda_bench(repeats: int, frames: int) -> None:
    from comfyui_videodit.core.latent_formats import WAN21
    from comfyui_videodit.families.memory_plan import SwapSetting, WeightLayout, plan_model
    from comfyui_videodit.families.wan_memory import wan_step_memory

    device = torch.device("cuda")
    config = WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)
    network = random_network(config, torch.bfloat16, device="cuda")
    latent = WAN21.latent_shape(1, frames, 480, 832)
    x = torch.randn(*latent, device=device, dtype=torch.bfloat16)
    t = torch.full((1,), 700.0, device=device)
    text = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
    weights = WeightLayout.of(network, list(network.blocks))
    step = wan_step_memory(config, latent, compute_dtype=torch.bfloat16)
    total = torch.cuda.mem_get_info()[1]
    print(f"CUDA {torch.cuda.get_device_name()}, 14B-shaped bf16 ({weights.total / GB:.1f} GB), "
          f"latent {latent}")
    print("| budget | blocks on device | predicted peak | max_memory_allocated | s/step |")
    print("|---|---|---|---|---|")
    budgets = [12, 24] + ([int(total / GB)] if total > weights.total + step.total + GB else [])
    for budget_gb in budgets:
        plan = plan_model("14B", weights, step, swap=SwapSetting(0, 1),
                          budget=budget_gb * GB - int(0.9 * GB))
        placement = StreamedPlacement(network, "bench", list(network.blocks),
                                      blocks_on_device=plan.blocks_on_device,
                                      prefetch=plan.prefetch, load_device=device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        times = []
        with torch.no_grad(), placement.use() as module:
            for _ in range(repeats):
                torch.cuda.synchronize()
                start = time.perf_counter()
                module(x, t, text)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        placement.offload()
        print(f"| {budget_gb} GB | {plan.blocks_on_device}/40 | {plan.peak / GB:.1f} GB | "
              f"{torch.cuda.max_memory_allocated() / GB:.1f} GB | "
              f"{statistics.median(times):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--cuda-only", action="store_true")
    args = parser.parse_args()
    if not args.cuda_only:
        cpu_bench(args.repeats)
    if torch.cuda.is_available():
        cuda_bench(args.repeats, args.frames)
    else:
        print("no CUDA device: GPU figures not measured")


if __name__ == "__main__":
    main()
