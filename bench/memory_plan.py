"""The memory plan for the released Wan sizes, and its estimates checked against measured peaks.

Part 1 (the table): Wan 2.1 1.3B, Wan 2.2 5B, Wan 2.1 14B and Wan 2.2 A14B (two 14B experts,
one on the device at a time) built on the meta device (no weights, no download), at
480x832 and 720x1280 (5B: 704x1280, its grid), 81 frames, weights fp16 or fp8, cfg 5 with the
two guidance passes run one after the other (the default), for devices of 8 to 80 GB. Each row:
what block swap on auto keeps on the device, the predicted step peak, whether it fits, and the
VAE decode peak. A device of N GB is taken as N GB minus 0.4 GB reserve and 0.5 GB for the
CUDA context, PyTorch's kernels and workspaces.

Part 2 (``--check``): the step and decode estimates against peaks measured on the CPU (the
PyTorch profiler's allocator events) for small configurations.

Run: ``python bench/memory_plan.py [--check]``. Record the output in bench/README.md.
"""
from __future__ import annotations

import sys

import torch

from comfyui_videodit.core.host_memory import allocator_peak_bytes, gib
from comfyui_videodit.core.latent_formats import WAN21, WAN22
from comfyui_videodit.families.memory_plan import (MemoryPlan, SwapSetting, WeightLayout,
                                                    decode_peak, plan_model)
from comfyui_videodit.families.wan_memory import wan_step_memory
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

GB = 1024 ** 3
DEVICES_GB = (8, 12, 16, 24, 48, 80)
OVERHEAD = int(0.9 * GB)   # reserve + CUDA context

MODELS = {
    "Wan 2.1 1.3B": (WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30), WAN21),
    "Wan 2.2 5B": (WanDiTConfig(model_type="ti2v", in_dim=48, out_dim=48, dim=3072,
                                ffn_dim=14336, num_heads=24, num_layers=30), WAN22),
    "Wan 2.1 14B": (WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40), WAN21),
    "Wan 2.2 A14B": (WanDiTConfig(model_type="i2v", in_dim=36, clip_input=False, dim=5120,
                                  ffn_dim=13824, num_heads=40, num_layers=40), WAN21),
}


def layout(config: WanDiTConfig, weights: str) -> WeightLayout:
    config = WanDiTConfig(**{**config.__dict__, "fp8_linears": weights == "fp8"})
    with torch.device("meta"):
        network = WanDiT(config)
    for p in network.parameters():
        if p.dtype.itemsize > 1:
            p.data = p.data.to(torch.float16)
    return WeightLayout.of(network, list(network.blocks))


def table() -> None:
    print("| model | weights | size | frames | weights GB | device | blocks on device | "
          "step peak | fits | VAE decode (tiled 512) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (config, fmt) in MODELS.items():
        for weights in ("fp16", "fp8"):
            sizes = layout(config, weights)
            for height, width in ((480, 832), (704, 1280) if fmt is WAN22 else (720, 1280)):
                latent = fmt.latent_shape(1, 81, height, width)
                step = wan_step_memory(config, latent, compute_dtype=torch.float16)
                decode = decode_peak(fmt, height, width, 2)
                tiled = decode_peak(fmt, height, width, 2, tile=512)
                for device in DEVICES_GB:
                    budget = device * GB - OVERHEAD
                    plan = plan_model(name, sizes, step, swap=SwapSetting(0, 1), budget=budget)
                    verdict = MemoryPlan("cuda", budget, (plan,), decode, tiled)
                    blocks = (f"all {plan.block_count}" if plan.blocks_on_device >= plan.block_count
                              else f"{plan.blocks_on_device}/{plan.block_count}")
                    fits = "yes" if verdict.fits else "no"
                    if verdict.fits and not verdict.decode_fits:
                        fits = "yes, tiled decode"
                    print(f"| {name} | {weights} | {width}x{height} | 81 | "
                          f"{sizes.total / GB:.1f} | {device} GB | {blocks} | "
                          f"{gib(plan.peak)} | {fits} | {gib(decode)} ({gib(tiled)}) |",
                          flush=True)


# -- part 2: estimates against measured CPU peaks ------------------------------------------------
def check_step(label: str, config: WanDiTConfig, shape, dtype, batch_extra=None) -> None:
    torch.manual_seed(0)
    network = WanDiT(config).eval()
    for p in network.parameters():
        p.data = (torch.randn(p.shape) * 0.05).to(p.dtype if p.dtype.itemsize == 1 else dtype)
    x = torch.randn(*shape).to(dtype)
    t = torch.full((shape[0],), 500.0)
    if config.model_type == "ti2v":
        t = torch.full((shape[0], shape[2] * (shape[3] // 2) * (shape[4] // 2)), 500.0)
    text = torch.randn(shape[0], 512, config.text_dim).to(dtype)
    with torch.no_grad():
        network(x, t, text)
        peak = allocator_peak_bytes(lambda: network(x, t, text))
    estimate = wan_step_memory(config, tuple(shape), compute_dtype=dtype).total
    print(f"| step: {label} | {peak / 2**20:.1f} | {estimate / 2**20:.1f} | "
          f"{estimate / peak:.3f} |", flush=True)


def check_decode(version: str, latent_hw: int, dtype) -> None:
    from comfyui_videodit.core.placement import Placement
    from comfyui_videodit.model_loaders.wan_vae_loader import LoadedVAE
    from comfyui_videodit.networks.wan_vae import WanVAE, WanVAEConfig

    kwargs = dict(dim=160, decoder_dim=256, z_dim=48) if version == "2.2" else {}
    config = WanVAEConfig(version, **kwargs)
    fmt = WAN22 if version == "2.2" else WAN21
    torch.manual_seed(0)
    vae = LoadedVAE(Placement(WanVAE(config).to(dtype).eval(), "vae"), fmt, dtype, "vae")
    latent = torch.randn(1, config.z_dim, 2, latent_hw, latent_hw)
    vae.decode(latent)
    peak = allocator_peak_bytes(lambda: vae.decode(latent))
    side = latent_hw * fmt.spatial_factor
    estimate = decode_peak(fmt, side, side, dtype.itemsize, weights=False)
    print(f"| decode: Wan {version} VAE {side}x{side} {str(dtype)[6:]} | {peak / 2**20:.1f} | "
          f"{estimate / 2**20:.1f} | {estimate / peak:.3f} |", flush=True)


def check() -> None:
    print("| what | measured peak MB | estimate MB | estimate / measured |")
    print("|---|---|---|---|")
    small = dict(num_layers=2, text_dim=64, freq_dim=32)
    for label, config, shape, dtype in (
            ("1.3B-like FFN ratio, fp32", WanDiTConfig(dim=256, ffn_dim=1536, num_heads=2,
                                                       **small), (1, 16, 5, 32, 32),
             torch.float32),
            ("1.3B-like FFN ratio, bf16", WanDiTConfig(dim=256, ffn_dim=1536, num_heads=2,
                                                       **small), (1, 16, 5, 32, 32),
             torch.bfloat16),
            ("14B-like FFN ratio, bf16", WanDiTConfig(dim=512, ffn_dim=1382, num_heads=4,
                                                      **small), (1, 16, 5, 32, 48),
             torch.bfloat16),
            ("14B-like, fp8 weights", WanDiTConfig(dim=512, ffn_dim=1382, num_heads=4,
                                                   fp8_linears=True, **small),
             (1, 16, 5, 32, 48), torch.bfloat16),
            ("5B-like (per-token time), bf16", WanDiTConfig(model_type="ti2v", in_dim=48,
                                                            out_dim=48, dim=384, ffn_dim=1792,
                                                            num_heads=3, **small),
             (1, 48, 5, 32, 32), torch.bfloat16),
            ("batch 2 (stacked cfg), fp16", WanDiTConfig(dim=256, ffn_dim=1536, num_heads=2,
                                                         **small), (2, 16, 5, 32, 32),
             torch.float16)):
        check_step(label, config, shape, dtype)
    for version, side in (("2.1", 16), ("2.1", 24), ("2.2", 8), ("2.2", 12)):
        check_decode(version, side, torch.bfloat16)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    else:
        table()
