"""The model-family plug point: a second family, written here, runs through the real nodes.

The toy family below is a few-layer DiT on 1x1 patches with its own file layout and a shorter
text length. Registering it is all it takes: the real VideoDiT Model Loader recognises its file
from tensor names, the real sampler runs it (cfg, text fitted to its length), and the real VAE
Decode turns the result into frames. No file outside this test is edited for it.
"""
from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from comfyui_videodit.core.latent_formats import WAN21
from comfyui_videodit.errors import InputError
from comfyui_videodit.families import registry
from comfyui_videodit.families.base import LoadedWeights, ModelFamily, TextSpec
from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent
from comfyui_videodit.nodes.loaders import VideoDiTModelLoader
from comfyui_videodit.nodes.sampling import VideoDiTSampler
from comfyui_videodit.nodes.text import VideoDiTTextEncode, VideoDiTTextEncoderLoader
from comfyui_videodit.nodes.vae import VideoDiTVAEDecode, VideoDiTVAELoader

TOY_TEXT_LEN = 16
MARKER = "toy_dit.proj_in.weight"


class ToyDiT(nn.Module):
    """Latent cells as tokens; each block mixes in the time and the pooled text."""

    def __init__(self, channels: int, text_dim: int, dim: int, layers: int):
        super().__init__()
        self.proj_in = nn.Linear(channels, dim)
        self.time = nn.Linear(1, dim)
        self.text = nn.Linear(text_dim, dim)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
                                    for _ in range(layers))
        self.proj_out = nn.Linear(dim, channels)

    def forward(self, x, t, text):
        self.seen_text_shape = tuple(text.shape)
        tokens = x.flatten(2).transpose(1, 2)                        # [B, N, C]
        h = self.proj_in(tokens) + self.time(t[:, None, None] / 1000)
        h = h + self.text(text.mean(dim=1, keepdim=True))
        for block in self.blocks:
            h = h + block(h)
        return self.proj_out(h).transpose(1, 2).reshape(x.shape)


class ToyFamily(ModelFamily):
    name = "toy"
    title = "Toy DiT"
    text_spec = TextSpec(encoder="umt5", length=TOY_TEXT_LEN)
    weight_dtype_choices = ("default", "fp32")

    def __init__(self):
        self.velocity_calls = 0

    def recognizes(self, shapes):
        return MARKER in shapes

    def load(self, path, *, weight_dtype="default", name=None, device=None):
        state = {k.removeprefix("toy_dit."): v for k, v in load_file(str(path)).items()}
        layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        dim, channels = state["proj_in.weight"].shape
        network = ToyDiT(channels, state["text.weight"].shape[1], dim, layers)
        network.load_state_dict(state)
        return LoadedWeights(network.eval().requires_grad_(False), {"layers": layers}, "toy-dit",
                             WAN21, torch.float32, name or path.name)

    def velocity(self, network, config, x, sigma, inputs, *, compute_dtype, run=None):
        self.velocity_calls += 1
        device = next(network.parameters()).device
        t = torch.full((x.shape[0],), sigma * 1000.0, device=device)
        return network(x.to(device, compute_dtype), t, inputs.text.to(device, compute_dtype)).float()


@pytest.fixture
def toy_models_dir(tiny_models_dir, tmp_path, monkeypatch):
    """The tiny models folder plus one toy-family file, and the toy family registered."""
    from comfyui_videodit.runtime import model_folders
    from tiny_models import TEXT_DIM

    root = tmp_path / "models"
    shutil.copytree(tiny_models_dir, root)
    torch.manual_seed(0)
    toy = ToyDiT(channels=WAN21.channels, text_dim=TEXT_DIM, dim=24, layers=3)
    save_file({f"toy_dit.{k}": v.contiguous() for k, v in toy.state_dict().items()},
              str(root / "diffusion_models" / "toy_dit.safetensors"))
    monkeypatch.setattr(model_folders, "_models_dir_override", root)
    family = ToyFamily()
    registry.register_family(family)
    try:
        yield family
    finally:
        registry.unregister_family(family.name)


def test_a_registered_family_runs_through_loader_sampler_and_vae_decode(toy_models_dir):
    family = toy_models_dir
    model = VideoDiTModelLoader().load("toy_dit.safetensors", "fp32")[0]
    assert model.family is family and model.variant == "toy-dit"
    vae = VideoDiTVAELoader().load("tiny_vae21.safetensors", "fp32")[0]
    encoder = VideoDiTTextEncoderLoader().load("tiny_umt5.safetensors", "fp32", "cpu")[0]
    cond = VideoDiTTextEncode().encode(encoder, "a red ball", "blurry")[0]
    latent = VideoDiTEmptyLatent().make(vae, 64, 64, 9, 1)[0]

    sampler = VideoDiTSampler()
    out = sampler.sample(model, cond, latent, 5, 3, 4.0, 5.0, "euler", 1.0)[0]
    assert family.velocity_calls == 3 * 2                      # 3 steps, cond + uncond
    assert model.network.seen_text_shape[1] == TOY_TEXT_LEN    # fitted to the family's spec
    again = sampler.sample(model, cond, latent, 5, 3, 4.0, 5.0, "euler", 1.0)[0]
    other_seed = sampler.sample(model, cond, latent, 6, 3, 4.0, 5.0, "euler", 1.0)[0]
    assert out["samples"].shape == latent["samples"].shape and out["latent_format"] == "wan21"
    assert torch.equal(out["samples"], again["samples"])
    assert not torch.equal(out["samples"], other_seed["samples"])

    frames = VideoDiTVAEDecode().decode(vae, out)[0]
    assert frames.shape == (9, 64, 64, 3) and torch.isfinite(frames).all()
    assert 0.0 <= float(frames.min()) and float(frames.max()) <= 1.0


def test_the_loader_names_the_known_families_for_an_unknown_file(toy_models_dir, tmp_path):
    from comfyui_videodit.runtime import model_folders

    folder = model_folders._models_dir_override / "diffusion_models"
    save_file({"mystery.weight": torch.zeros(2, 2)}, str(folder / "mystery.safetensors"))
    with pytest.raises(InputError, match=r"known family \(Wan 2.1 / 2.2, Toy DiT\)"):
        VideoDiTModelLoader().load("mystery.safetensors", "default")
    with pytest.raises(InputError, match="weight_dtype 'bf16' is not one Toy DiT models"):
        VideoDiTModelLoader().load("toy_dit.safetensors", "bf16")
    with pytest.raises(InputError, match="is a Wan VAE, not a diffusion model"):
        shutil.copy(model_folders._models_dir_override / "vae" / "tiny_vae21.safetensors",
                    folder / "vae_by_mistake.safetensors")
        VideoDiTModelLoader().load("vae_by_mistake.safetensors", "default")
