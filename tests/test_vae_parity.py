"""Wan VAE 2.1 / 2.2 against diffusers' ``AutoencoderKLWan`` on tiny random configurations.

Same weights in, same numbers out: the diffusers model's weights are renamed to the original
(ComfyUI) layout, written to a file and loaded through our loader; the diffusers-layout file is
loaded too. Encode compares the raw latent mean (no sampling); decode compares clamped pixels.
Tolerance (fp32): max |ours - diffusers| <= 1e-4 x std(diffusers output).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from comfyui_videodit.model_loaders.wan_vae_keys import (diffusers_config, diffusers_to_original,
                                                        original_to_diffusers)
from comfyui_videodit.model_loaders.wan_vae_loader import Tiling, load_wan_vae
from comfyui_videodit.networks.wan_vae import WanVAEConfig

diffusers = pytest.importorskip("diffusers")

CONFIGS = {
    "2.1": WanVAEConfig(version="2.1", dim=8, decoder_dim=8, z_dim=4),
    "2.2": WanVAEConfig(version="2.2", dim=8, decoder_dim=12, z_dim=6),
}
TOLERANCE = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def random_reference(cfg: WanVAEConfig):
    """A diffusers model with random weights (gains near 1 so activations stay O(1))."""
    torch.manual_seed(1)
    model = diffusers.AutoencoderKLWan(**diffusers_config(cfg)).eval()
    state = {k: (1 + 0.1 * torch.randn_like(v)) if k.endswith("gamma") else 0.2 * torch.randn_like(v)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model, state


@pytest.fixture(scope="module", params=list(CONFIGS))
def pair(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    reference, state = random_reference(cfg)
    folder = tmp_path_factory.mktemp(f"vae{request.param}")
    original = folder / "wan_vae_original.safetensors"
    save_file({k: v.contiguous() for k, v in diffusers_to_original(state).items()}, original)
    return cfg, reference, load_wan_vae(original, dtype="fp32"), folder, state


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.std()).item()


def pixels_for(cfg: WanVAEConfig, frames: int, size: int) -> torch.Tensor:
    torch.manual_seed(frames)
    return torch.rand(frames, size, size, 3)


@pytest.mark.parametrize("frames", [1, 5, 9])
def test_encode_and_decode_match_diffusers(pair, frames):
    cfg, reference, vae, _, _ = pair
    images = pixels_for(cfg, frames, cfg.spatial_factor * 3)
    video = images.permute(3, 0, 1, 2)[None] * 2 - 1
    with torch.no_grad():
        mu_ref = reference.encode(video).latent_dist.mode()
        pixels_ref = reference.decode(mu_ref).sample
    mu = vae.encode(images)
    assert mu.shape == mu_ref.shape
    print(f"Wan {cfg.version} {frames} frames: encode max err/std {relative_error(mu, mu_ref):.2e}", end="; ")
    assert relative_error(mu, mu_ref) <= TOLERANCE
    decoded = vae.decode(mu_ref)
    expected = ((pixels_ref[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    assert decoded.shape == expected.shape == images.shape
    print(f"decode max err/std {relative_error(decoded, expected):.2e}")
    assert relative_error(decoded, expected) <= TOLERANCE


def test_diffusers_layout_file_loads_to_the_same_numbers(pair):
    cfg, reference, vae, folder, state = pair
    path = folder / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    from_diffusers = load_wan_vae(path, dtype="fp32")
    assert from_diffusers.network.config == vae.network.config == cfg
    latent = torch.randn(1, cfg.z_dim, 2, 3, 3)
    assert torch.equal(from_diffusers.decode(latent), vae.decode(latent))


def test_rename_round_trips_every_diffusers_key(pair):
    _, _, _, _, state = pair
    original = diffusers_to_original(state)
    assert len(original) == len(state)
    assert original_to_diffusers(original).keys() == state.keys()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * torch.log10(1.0 / (a - b).pow(2).mean().clamp_min(1e-12)).item()


@pytest.fixture(scope="module")
def calm_vae(pair, tmp_path_factory):
    """The same layout with smaller random weights: random full-size weights mix every pixel
    through the mid-block attention, which no tiling can reproduce; trained weights are local."""
    cfg = pair[0]
    torch.manual_seed(2)
    model = diffusers.AutoencoderKLWan(**diffusers_config(cfg))
    state = {k: (1 + 0.1 * torch.randn_like(v)) if k.endswith("gamma") else 0.05 * torch.randn_like(v)
             for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("calm") / "calm.safetensors"
    save_file({k: v.contiguous() for k, v in diffusers_to_original(state).items()}, path)
    return load_wan_vae(path, dtype="fp32")


def test_tiled_decode_is_close_to_untiled(calm_vae):
    """Stated bound: PSNR(tiled, untiled) >= 20 dB for 8-latent tiles overlapping by 2 on a
    12x12 latent, and blending an overlap beats butting tiles edge to edge."""
    cfg = calm_vae.network.config
    f = cfg.spatial_factor
    torch.manual_seed(3)
    latent = torch.randn(1, cfg.z_dim, 2, 12, 12)
    whole = calm_vae.decode(latent)
    blended = psnr(calm_vae.decode(latent, tile=Tiling(size=8 * f, overlap=2 * f)), whole)
    butted = psnr(calm_vae.decode(latent, tile=Tiling(size=6 * f, overlap=0)), whole)
    print(f"Wan {cfg.version} tiled decode PSNR vs untiled: blended {blended:.1f} dB, "
          f"edge to edge {butted:.1f} dB")
    assert blended >= 20.0
    assert blended > butted


def test_tiled_encode_is_close_to_untiled(pair):
    cfg, _, vae, _, _ = pair
    f = cfg.spatial_factor
    images = pixels_for(cfg, 5, 7 * f)
    whole = vae.encode(images)
    tiled = vae.encode(images, tile=Tiling(size=4 * f, overlap=2 * f))
    assert tiled.shape == whole.shape
    assert ((tiled - whole).abs().mean() / whole.std()).item() < 0.5


def test_tiled_decode_matches_diffusers_where_one_tile_covers_the_frame(pair):
    """A tile at least as large as the frame is the untiled path, in diffusers and here."""
    cfg, reference, vae, _, _ = pair
    latent = torch.randn(1, cfg.z_dim, 3, 3, 3)
    f = cfg.spatial_factor
    reference.enable_tiling(tile_sample_min_height=8 * f, tile_sample_min_width=8 * f,
                            tile_sample_stride_height=6 * f, tile_sample_stride_width=6 * f)
    try:
        with torch.no_grad():
            expected = ((reference.decode(latent).sample[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    finally:
        reference.disable_tiling()
    ours = vae.decode(latent, tile=Tiling(size=8 * f, overlap=2 * f))
    assert relative_error(ours, expected) <= TOLERANCE


def test_latent_statistics_conventions_agree_with_diffusers():
    """diffusers keeps raw latents and normalises in the pipeline with the config's mean/std,
    as we do; its default config carries the Wan 2.1 statistics we use."""
    from comfyui_videodit.core.latent_formats import WAN21, WAN22

    import inspect

    params = inspect.signature(diffusers.AutoencoderKLWan.__init__).parameters
    assert tuple(params["latents_mean"].default) == WAN21.mean
    assert tuple(params["latents_std"].default) == WAN21.std
    assert len(WAN22.mean) == len(WAN22.std) == 48 and min(WAN22.std) > 0
    raw = torch.randn(1, 48, 2, 3, 3)
    assert torch.allclose(WAN22.denormalize(WAN22.normalize(raw)), raw, atol=1e-5)


def _script_key_map_21(key: str) -> str:
    """The Wan 2.1 VAE key map of diffusers' scripts/convert_wan_to_diffusers.py (``convert_vae``),
    re-implemented from its documented rules: the script is not part of the installed package
    (it downloads the weights when run), so it cannot be imported here."""
    resnet = {"residual.0.gamma": "norm1.gamma", "residual.2.": "conv1.", "residual.3.gamma": "norm2.gamma",
              "residual.6.": "conv2.", "shortcut.": "conv_shortcut."}
    fixed = {"encoder.conv1.": "encoder.conv_in.", "decoder.conv1.": "decoder.conv_in.",
             "encoder.head.0.": "encoder.norm_out.", "encoder.head.2.": "encoder.conv_out.",
             "decoder.head.0.": "decoder.norm_out.", "decoder.head.2.": "decoder.conv_out.",
             "encoder.middle.1.": "encoder.mid_block.attentions.0.",
             "decoder.middle.1.": "decoder.mid_block.attentions.0."}
    if key.count(".") == 1:  # conv1 / conv2 of the VAE itself
        return {"conv1": "quant_conv", "conv2": "post_quant_conv"}[key.split(".")[0]] + key[5:]
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old):]
    parts = key.split(".")
    rest = ".".join(parts[3:])
    for old, new in resnet.items():
        if rest.startswith(old):
            rest = new + rest[len(old):]
    index = int(parts[2])
    if parts[1] == "middle":  # middle.0 / middle.2 -> mid_block.resnets.0 / .1
        return f"{parts[0]}.mid_block.resnets.{index // 2}.{rest}"
    if parts[0] == "encoder":
        return f"encoder.down_blocks.{index}.{rest}"
    if index in (3, 7, 11):  # the upsamplers between the groups of three residual blocks
        return f"decoder.up_blocks.{index // 4}.upsamplers.0.{rest}"
    return f"decoder.up_blocks.{index // 4}.resnets.{index % 4}.{rest}"


def test_rename_agrees_with_the_diffusers_conversion_script_for_wan21():
    _, state = random_reference(CONFIGS["2.1"])
    original = diffusers_to_original(state)
    for key, value in original.items():
        assert state[_script_key_map_21(key)] is value, key
