"""The text's cross-attention keys/values are computed once per sampling run and reused.

Reusing them runs exactly the same operations on the same inputs as recomputing them, so the
results are compared with ``torch.equal`` (fp32 and bf16). Also: the cache is filled at the
first call and then serves every later one (no key/value projection runs again); a text made
anew with the same values is recognised, a text changed in place is not served stale, a
stacked (batched cfg) text gets its own entry; and a weight patch that differs between runs
(a LoRA merge) never sees the keys/values of another run.
"""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.core.conditioning import ModelInputs
from comfyui_videodit.core.latent_formats import WAN21
from comfyui_videodit.core.placement import Placement
from comfyui_videodit.core.run_info import RunInfo
from comfyui_videodit.families import speed_options
from comfyui_videodit.families.base import LoadedWeights
from comfyui_videodit.families.model import ModelPatch, VideoModel
from comfyui_videodit.families.wan import WanFamily
from comfyui_videodit.networks.wan_dit import CrossAttentionCache, WanDiT, WanDiTConfig

TEXT_DIM, CLIP_DIM = 32, 24


def tiny_network(model_type: str = "t2v", dtype: torch.dtype = torch.float32) -> WanDiT:
    config = WanDiTConfig(model_type=model_type, in_dim=36 if model_type == "i2v" else 16,
                          dim=128, ffn_dim=96, num_heads=2, num_layers=2, text_dim=TEXT_DIM,
                          freq_dim=32, image_dim=CLIP_DIM)
    torch.manual_seed(0)
    network = WanDiT(config).eval()
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            parameter.copy_(base + 0.1 * torch.randn_like(parameter))
    return network.to(dtype)


def forward_inputs(model_type: str, dtype: torch.dtype, seed: int, batch: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    args = dict(x=torch.randn(batch, 16, 2, 4, 4, generator=g).to(dtype),
                timestep=torch.full((batch,), 900.0 - 300 * seed))
    if model_type == "i2v":
        args["y"] = torch.randn(batch, 20, 2, 4, 4, generator=g).to(dtype)
    return args


def text_and_image(model_type: str, dtype: torch.dtype, batch: int = 1) -> dict:
    g = torch.Generator().manual_seed(7)
    out = dict(context=torch.randn(batch, 512, TEXT_DIM, generator=g).to(dtype))
    if model_type == "i2v":
        out["clip_features"] = torch.randn(batch, 257, CLIP_DIM, generator=g).to(dtype)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("model_type", ["t2v", "i2v"])
@torch.no_grad()
def test_cached_keys_values_give_identical_outputs(model_type, dtype):
    network = tiny_network(model_type, dtype)
    text = text_and_image(model_type, dtype)
    cache = CrossAttentionCache()
    for seed in range(3):  # the first call fills the cache, the next two read it
        args = forward_inputs(model_type, dtype, seed)
        cached = network(**args, **text, cross_cache=cache)
        assert cache.complete(network.blocks)
        fresh = network(**args, **text)
        assert torch.equal(cached, fresh), f"step {seed}"


@torch.no_grad()
def test_a_filled_cache_skips_the_text_projections():
    network = tiny_network("i2v")
    calls = []
    for name in ("text_embedding", "img_emb", "blocks.0.cross_attn.k", "blocks.1.cross_attn.v_img"):
        network.get_submodule(name).register_forward_hook(lambda *_, n=name: calls.append(n))
    cache = CrossAttentionCache()
    text = text_and_image("i2v", torch.float32)
    network(**forward_inputs("i2v", torch.float32, 0), **text, cross_cache=cache)
    assert len(calls) == 4
    network(**forward_inputs("i2v", torch.float32, 1), **text, cross_cache=cache)
    assert len(calls) == 4, "text embedding or key/value projections ran again"


def make_model(network: WanDiT) -> VideoModel:
    loaded = LoadedWeights(network, network.config, "wan-t2v-custom", WAN21, torch.float32,
                           "tiny.safetensors")
    return VideoModel.from_loaded(loaded, WanFamily(), Placement(network, "tiny"))


def no_run_velocity(model: VideoModel, x, sigma, inputs) -> torch.Tensor:
    return model.family.velocity(model.network, model.config, x, sigma, inputs,
                                 compute_dtype=model.compute_dtype, run=None)


@torch.no_grad()
def test_a_run_reuses_per_text_and_matches_recomputation():
    model = make_model(tiny_network())
    g = torch.Generator().manual_seed(3)
    positive = torch.randn(1, 512, TEXT_DIM, generator=g)
    negative = torch.randn(1, 512, TEXT_DIM, generator=g)
    run = RunInfo(sigmas=(0.9, 0.5, 0.0))
    velocity = model.run(run)
    for step, sigma in enumerate((0.9, 0.5)):
        x = torch.randn(1, 16, 2, 4, 4, generator=g)
        passes = {
            "positive": (x, ModelInputs(text=positive, branch="positive")),
            "negative": (x, ModelInputs(text=negative, branch="negative")),
            # stacked anew every step, as the batched cfg pass does: found by value; its batch
            # differs from the single passes', so it has its own entry
            "both": (torch.cat([x, x]), ModelInputs(text=torch.cat([positive, negative]),
                                                    branch="both")),
        }
        for branch, (latent, inputs) in passes.items():
            reused = velocity(latent, sigma, inputs)
            assert torch.equal(reused, no_run_velocity(model, latent, sigma, inputs)), \
                f"step {step}, {branch}"
        entries = run.state["wan.text_kv"][model.network]
        assert len(entries) == 3, "each text is cached once, not once per step"
    run.finish()
    assert run.state == {}


@torch.no_grad()
def test_text_changed_in_place_is_not_served_stale():
    model = make_model(tiny_network())
    text = torch.randn(1, 512, TEXT_DIM, generator=torch.Generator().manual_seed(4))
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    velocity = model.run(RunInfo(sigmas=(0.9, 0.5, 0.0)))
    velocity(x, 0.9, ModelInputs(text=text))
    text.mul_(-1.0)
    changed = velocity(x, 0.5, ModelInputs(text=text))
    assert torch.equal(changed, no_run_velocity(model, x, 0.5, ModelInputs(text=text)))


def test_inference_mode_texts_are_reused_and_never_served_stale():
    """ComfyUI runs nodes under torch.inference_mode, whose tensors have no version counter."""
    model = make_model(tiny_network())
    with torch.inference_mode():
        text = torch.randn(1, 512, TEXT_DIM, generator=torch.Generator().manual_seed(6))
        x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(7))
        run = RunInfo(sigmas=(0.9, 0.5, 0.3, 0.0))
        velocity = model.run(run)
        velocity(x, 0.9, ModelInputs(text=text))
        reused = velocity(x, 0.5, ModelInputs(text=text))
        assert torch.equal(reused, no_run_velocity(model, x, 0.5, ModelInputs(text=text)))
        assert len(run.state["wan.text_kv"][model.network]) == 1
        text.mul_(-1.0)
        changed = velocity(x, 0.3, ModelInputs(text=text))
        assert torch.equal(changed, no_run_velocity(model, x, 0.3, ModelInputs(text=text)))


class ScaleCrossAttention(ModelPatch):
    """Changes the text key/value weights, as a LoRA merge would."""
    name = "scale cross-attention"
    changes_weights = True

    def weight_updates(self, model):
        return {f"blocks.{i}.cross_attn.{p}.weight": (lambda w: w * 1.5)
                for i in range(2) for p in ("k", "v")}


@torch.no_grad()
def test_weight_patches_of_another_run_never_see_its_keys_values():
    base = make_model(tiny_network())
    patched = base.with_patch(ScaleCrossAttention())
    text = torch.randn(1, 512, TEXT_DIM, generator=torch.Generator().manual_seed(6))
    x = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    inputs = ModelInputs(text=text)

    def sampled(model):  # two steps of one run, the second reading the cache
        run = RunInfo(sigmas=(0.9, 0.5, 0.0))
        velocity = model.run(run)
        velocity(x, 0.9, inputs)
        out = velocity(x, 0.5, inputs)
        run.finish()
        return out

    plain_first = sampled(base)
    with_patch = sampled(patched)
    # the network still carries the patched weights: recompute without any cache
    assert torch.equal(with_patch, no_run_velocity(patched, x, 0.5, inputs))
    assert not torch.equal(with_patch, plain_first)
    assert torch.equal(sampled(base), plain_first)


@torch.no_grad()
def test_the_cache_can_be_switched_off_per_run():
    model = make_model(tiny_network())
    run = RunInfo(sigmas=(0.9, 0.0), options={speed_options.TEXT_KV_CACHE: False})
    text = torch.randn(1, 512, TEXT_DIM)
    model.run(run)(torch.randn(1, 16, 2, 4, 4), 0.9, ModelInputs(text=text))
    assert "wan.text_kv" not in run.state
