"""CLIP vision: penultimate hidden states equal transformers' CLIPVisionModel, in every layout.

Tiny random ViT (image 32, patch 8, width 128, 2 heads, 3 layers) with the real key layouts:
ComfyUI/transformers ``vision_model.*``, transformers 5's unprefixed ``CLIPVisionModel``,
open-clip ``visual.*`` and Wan's original ``visual.transformer.N.attn.to_qkv``.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")

from comfyui_videodit.errors import InputError  # noqa: E402
from comfyui_videodit.networks.clip_vision import CLIP_MEAN, CLIP_STD  # noqa: E402
from comfyui_videodit.nodes.clip_vision import (VideoDiTCLIPVisionEncode,  # noqa: E402
                                                VideoDiTCLIPVisionLoader)

REL_TOL = 1e-4  # max |ours - reference| <= 1e-4 * std, fp32


@pytest.fixture(scope="module")
def reference():
    config = transformers.CLIPVisionConfig(hidden_size=128, intermediate_size=256,
                                           num_hidden_layers=3, num_attention_heads=2,
                                           image_size=32, patch_size=8, projection_dim=32,
                                           hidden_act="gelu", layer_norm_eps=1e-5)
    torch.manual_seed(2)
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name:
                param.copy_((1 if name.endswith("weight") else 0) + 0.2 * torch.randn_like(param))
            elif param.ndim >= 2:
                param.copy_(torch.randn_like(param) * param[0].numel() ** -0.5)
            else:
                param.copy_(0.5 * torch.randn_like(param))
    return model


def wan_pixels(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """Wan's CLIPModel.visual preprocessing, step by step: [-1, 1] video -> bicubic -> mean/std."""
    videos = images.permute(0, 3, 1, 2) * 2 - 1
    videos = F.interpolate(videos, size=(size, size), mode="bicubic", align_corners=False)
    videos = videos * 0.5 + 0.5
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (videos - mean) / std


def penultimate(reference, pixels):
    with torch.no_grad():
        return reference(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]


def relative_error(ours, ref) -> float:
    return float((ours - ref).abs().max() / ref.std())


def to_open_clip(state: dict) -> dict:
    out = {"visual.class_embedding": state["vision_model.embeddings.class_embedding"],
           "visual.conv1.weight": state["vision_model.embeddings.patch_embedding.weight"],
           "visual.positional_embedding": state["vision_model.embeddings.position_embedding.weight"],
           "visual.proj": state["visual_projection.weight"].T.contiguous()}
    for part in ("weight", "bias"):
        out[f"visual.ln_pre.{part}"] = state[f"vision_model.pre_layrnorm.{part}"]
        out[f"visual.ln_post.{part}"] = state[f"vision_model.post_layernorm.{part}"]
    for i in range(3):
        src, dst = f"vision_model.encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{part}"] for p in "qkv"])
            for old, new in (("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                             ("self_attn.out_proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"),
                             ("mlp.fc2", "mlp.c_proj")):
                out[dst + f"{new}.{part}"] = state[src + f"{old}.{part}"]
    return out


def to_wan(state: dict) -> dict:
    width = state["vision_model.embeddings.class_embedding"].shape[0]
    out = {"visual.cls_embedding": state["vision_model.embeddings.class_embedding"].view(1, 1, width),
           "visual.patch_embedding.weight": state["vision_model.embeddings.patch_embedding.weight"],
           "visual.pos_embedding": state["vision_model.embeddings.position_embedding.weight"][None],
           "visual.head": state["visual_projection.weight"].T.contiguous(),
           "textual.token_embedding.weight": torch.zeros(10, 8), "log_scale": torch.zeros(())}
    for part in ("weight", "bias"):
        out[f"visual.pre_norm.{part}"] = state[f"vision_model.pre_layrnorm.{part}"]
        out[f"visual.post_norm.{part}"] = state[f"vision_model.post_layernorm.{part}"]
    for i in range(3):
        src, dst = f"vision_model.encoder.layers.{i}.", f"visual.transformer.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.to_qkv.{part}"] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{part}"] for p in "qkv"])
            for old, new in (("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
                             ("self_attn.out_proj", "attn.proj"), ("mlp.fc1", "mlp.0"),
                             ("mlp.fc2", "mlp.2")):
                out[dst + f"{new}.{part}"] = state[src + f"{old}.{part}"]
    return out


def test_network_matches_transformers_penultimate(reference):
    from comfyui_videodit.model_loaders.clip_vision_loader import config_from_state
    from comfyui_videodit.networks.clip_vision import CLIPVisionEncoder

    state = {k: v for k, v in reference.state_dict().items() if k.startswith("vision_model.")}
    ours = CLIPVisionEncoder(config_from_state(state, {})).eval()
    ours.load_state_dict(state, strict=True)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = ours(pixels)
    expected = penultimate(reference, pixels)
    assert got.shape == (2, 17, 128)
    err = relative_error(got, expected)
    print(f"CLIP vision vs transformers (penultimate): max abs err = {err:.2e} x std")
    assert err <= REL_TOL


def _save_layout(folder, layout: str, reference) -> str:
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    if layout == "comfyui":
        save_file(state, folder / "clip_vision_h.safetensors")
        return "clip_vision_h.safetensors"
    if layout == "transformers5":
        bare = {k[len("vision_model."):]: v for k, v in state.items() if k.startswith("vision_model.")}
        save_file(bare, folder / "clip_vision_bare.safetensors")
        return "clip_vision_bare.safetensors"
    if layout == "open_clip":
        save_file(to_open_clip(state), folder / "open_clip_vit_h.safetensors")
        return "open_clip_vit_h.safetensors"
    torch.save(to_wan(state), folder / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth")
    return "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"


@pytest.mark.parametrize("layout", ["comfyui", "transformers5", "open_clip", "wan"])
def test_every_layout_gives_the_reference_features(models_dir, reference, layout):
    name = _save_layout(models_dir / "clip_vision", layout, reference)
    clip_vision = VideoDiTCLIPVisionLoader().load(name, "fp32")[0]
    assert clip_vision.config.num_heads == 2 and clip_vision.config.hidden_act == "gelu"
    torch.manual_seed(3)
    start = torch.rand(1, 48, 40, 3)
    out = VideoDiTCLIPVisionEncode().encode(clip_vision, start, "none")[0]
    expected = penultimate(reference, wan_pixels(start))
    assert out.penultimate.shape == (1, 17, 128) and out.penultimate.dtype == torch.float32
    assert relative_error(out.penultimate, expected) <= REL_TOL


def test_start_and_end_image_for_first_last_frame(models_dir, reference):
    name = _save_layout(models_dir / "clip_vision", "comfyui", reference)
    clip_vision = VideoDiTCLIPVisionLoader().load(name, "fp32")[0]
    start, end = torch.rand(2, 40, 40, 3), torch.rand(1, 24, 56, 3)
    out = VideoDiTCLIPVisionEncode().encode(clip_vision, start, "none", end)[0]
    assert out.penultimate.shape == (2, 17, 128)
    expected = torch.cat([penultimate(reference, wan_pixels(start[:1])),
                          penultimate(reference, wan_pixels(end))])
    assert relative_error(out.penultimate, expected) <= REL_TOL


def test_center_crop_matches_comfyui_clip_vision_encode():
    from comfyui_videodit.networks.clip_vision import preprocess

    image = torch.rand(1, 32, 64, 3)
    got = preprocess(image, 32, "center")
    centre = (image[:, :, 16:48] * 255).round() / 255  # already 32 px high: crop only
    mean = torch.tensor(CLIP_MEAN)
    std = torch.tensor(CLIP_STD)
    expected = ((centre - mean) / std).permute(0, 3, 1, 2)
    assert torch.allclose(got, expected, atol=1e-6)
    assert preprocess(torch.rand(2, 50, 70, 3), 32, "center").shape == (2, 3, 32, 32)


def test_bad_inputs_are_refused_clearly(models_dir, reference):
    folder = models_dir / "clip_vision"
    save_file({"encoder.conv1.weight": torch.zeros(1), "decoder.conv1.weight": torch.zeros(1)},
              folder / "wan_2.1_vae.safetensors")
    with pytest.raises(InputError, match="CLIP Vision Loader.*is a Wan VAE.*VideoDiT VAE Loader"):
        VideoDiTCLIPVisionLoader().load("wan_2.1_vae.safetensors", "fp32")
    name = _save_layout(folder, "comfyui", reference)
    clip_vision = VideoDiTCLIPVisionLoader().load(name, "fp32")[0]
    with pytest.raises(InputError, match="start_image.*IMAGE"):
        VideoDiTCLIPVisionEncode().encode(clip_vision, torch.rand(32, 32, 3), "none")
    with pytest.raises(InputError, match="clip_vision.*VideoDiT CLIP Vision Loader"):
        VideoDiTCLIPVisionEncode().encode(object(), torch.rand(1, 32, 32, 3), "none")
