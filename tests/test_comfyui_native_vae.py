"""Our LATENTs are ComfyUI's: its own Wan VAE code encodes and decodes them identically.

Skipped unless ``VIDEODIT_COMFYUI_DIR`` names a ComfyUI checkout (``VIDEODIT_COMFYUI_PYTHON``:
the interpreter with ComfyUI's requirements). The same tiny Wan 2.1 VAE file is loaded by our
loader and by ComfyUI's ``comfy.ldm.wan.vae.WanVAE`` (run in ComfyUI's own interpreter); raw
latents and decoded pixels must agree, so a LATENT can move between our nodes and ComfyUI's
VAE Encode / VAE Decode in either direction.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_videodit.model_loaders.wan_vae_loader import load_wan_vae

pytestmark = pytest.mark.comfyui
COMFYUI_DIR = os.environ.get("VIDEODIT_COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("VIDEODIT_COMFYUI_PYTHON", sys.executable)

NATIVE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch
    from safetensors.torch import load_file, save_file
    from comfy.cli_args import args
    args.cpu = True  # before comfy.model_management is imported: no GPU probing
    from comfy.ldm.wan.vae import WanVAE
    net = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True]).eval()
    net.load_state_dict(load_file(sys.argv[2]))
    data = load_file(sys.argv[3])
    with torch.no_grad():
        latent = net.encode(data["pixels"] * 2 - 1)           # ComfyUI: VAE input in -1..1
        pixels = (net.decode(data["latent"]) + 1) / 2          # and back to 0..1
    save_file({"latent": latent.contiguous(), "pixels": pixels.clamp(0, 1).contiguous()}, sys.argv[4])
""")


@pytest.mark.skipif(not COMFYUI_DIR, reason="set VIDEODIT_COMFYUI_DIR to a ComfyUI checkout")
def test_comfyui_wan_vae_agrees_with_ours(tmp_path):
    from tiny_models import write_vae

    vae_file = write_vae(tmp_path, "tiny_vae21.safetensors", "2.1")
    ours = load_wan_vae(vae_file, dtype="fp32")
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(9, 32, 48, 3, generator=g)
    our_latent = ours.encode(frames)
    our_pixels = ours.decode(our_latent)

    save_file({"pixels": frames.permute(3, 0, 1, 2)[None].contiguous(),
               "latent": our_latent.contiguous()}, str(tmp_path / "inputs.safetensors"))
    env = {k: v for k, v in os.environ.items() if k != "VIDEODIT_STANDALONE"}
    done = subprocess.run([COMFYUI_PYTHON, "-c", NATIVE, COMFYUI_DIR, str(vae_file),
                           str(tmp_path / "inputs.safetensors"), str(tmp_path / "native.safetensors")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    native = load_file(str(tmp_path / "native.safetensors"))

    latent_err = float((native["latent"] - our_latent).abs().max() / our_latent.std())
    native_pixels = native["pixels"][0].permute(1, 2, 3, 0)
    pixel_err = float((native_pixels - our_pixels).abs().max())
    print(f"native vs ours: latent {latent_err:.2e} x std, pixels {pixel_err:.2e}")
    assert latent_err <= 1e-4, latent_err       # raw latents: no normalisation on either side
    assert pixel_err <= 1e-4, pixel_err
