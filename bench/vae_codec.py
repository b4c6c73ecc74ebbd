"""Wan 2.1 VAE encode and decode: ours vs diffusers' ``AutoencoderKLWan``, time and peak RSS.

The real Wan 2.1 shape (base_dim 96, z 16, ~127 M parameters) with random weights, one clip of
17 frames at 256x256, fp32. Every (implementation, direction) pair runs in its own subprocess so
peak resident memory is not shared; both load the same weights from one temporary file.
Run: ``python bench/vae_codec.py`` (CPU; a few minutes). Record the table in bench/README.md.
"""
from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

FRAMES, SIZE = 17, 256


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(impl: str, direction: str, weights: str) -> dict:
    torch.manual_seed(0)
    clip = torch.rand(FRAMES, SIZE, SIZE, 3)
    latent = torch.randn(1, 16, (FRAMES - 1) // 4 + 1, SIZE // 8, SIZE // 8)
    if impl == "ours":
        from comfyui_videodit.model_loaders.wan_vae_loader import load_wan_vae

        vae = load_wan_vae(weights, dtype="fp32")  # CPU, like the diffusers side
        work = (lambda: vae.encode(clip)) if direction == "encode" else (
            lambda: vae.decode(latent))
    else:
        from diffusers import AutoencoderKLWan
        from safetensors.torch import load_file

        from comfyui_videodit.model_loaders.wan_vae_keys import original_to_diffusers

        model = AutoencoderKLWan().eval()
        model.load_state_dict(original_to_diffusers(load_file(weights)))
        video = clip.permute(3, 0, 1, 2)[None] * 2 - 1

        def work():
            with torch.no_grad():  # the same output as ours: raw mean / pixels in 0..1 on CPU
                if direction == "encode":
                    return model.encode(video).latent_dist.mode()
                pixels = model.decode(latent).sample
                return ((pixels[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    loaded_rss = peak_rss_mb()
    start = time.perf_counter()
    out = work()
    seconds = time.perf_counter() - start
    return {"impl": impl, "direction": direction, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "rss_after_load_mb": loaded_rss, "out_shape": list(out.shape)}


def main() -> None:
    if len(sys.argv) == 4:  # child process
        print(json.dumps(run_one(*sys.argv[1:])))
        return
    from safetensors.torch import save_file

    from comfyui_videodit.networks.wan_vae import WanVAE, WanVAEConfig

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in WanVAE(WanVAEConfig()).state_dict().items()}
    with tempfile.TemporaryDirectory() as folder:
        weights = str(Path(folder) / "wan21_random.safetensors")
        save_file(state, weights)
        del state
        results = {}
        for direction in ("decode", "encode"):
            for impl in ("diffusers", "ours"):
                out = subprocess.run([sys.executable, __file__, impl, direction, weights],
                                     check=True, capture_output=True, text=True)
                results[impl, direction] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{FRAMES} frames {SIZE}x{SIZE}, Wan 2.1 VAE (base_dim 96) random weights, fp32")
    print("| direction | impl | time (s) | peak RSS (MB) | RSS after load (MB) | time ratio | peak ratio |")
    print("|---|---|---|---|---|---|---|")
    for direction in ("decode", "encode"):
        ref = results["diffusers", direction]
        for impl in ("diffusers", "ours"):
            r = results[impl, direction]
            print(f"| {direction} | {impl} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['rss_after_load_mb']:.0f} | {r['seconds'] / ref['seconds']:.2f} | "
                  f"{r['peak_rss_mb'] / ref['peak_rss_mb']:.2f} |")


if __name__ == "__main__":
    main()
