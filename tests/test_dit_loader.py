"""Wan DiT loader: stored dtypes (fp32/fp16/bf16, plain fp8, ComfyUI scaled fp8, per-layer
weight_scale), the weight_dtype choices, and the errors users see.

References are our fp32 network holding the same (rounded or dequantized) weights; its fp32
parity with diffusers is tested in test_dit_parity.py. Tolerances are relative to the output's
std: 1e-5 where only the file format differs, bf16/fp16 compute within 2e-2 / 5e-3, fp8 block
weights (compute bf16) within 6e-2.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from comfyui_videodit.errors import InputError
from comfyui_videodit.model_loaders import quantization
from comfyui_videodit.model_loaders.wan_dit_loader import load_wan_dit
from comfyui_videodit.networks.quantized_linear import QuantizedLinear
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

CONFIG = dict(model_type="t2v", in_dim=16, out_dim=16, dim=128, ffn_dim=128, num_heads=1,
              num_layers=2, text_dim=32, freq_dim=32)
BLOCK_LINEAR = ("self_attn.q.weight", "self_attn.k.weight", "self_attn.v.weight",
                "self_attn.o.weight", "cross_attn.q.weight", "cross_attn.k.weight",
                "cross_attn.v.weight", "cross_attn.o.weight", "ffn.0.weight", "ffn.2.weight")


def random_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(5)
    model = WanDiT(WanDiTConfig(**CONFIG))
    return {k: (1.0 if ("norm" in k and k.endswith("weight")) else 0.0) + 0.15 * torch.randn_like(v)
            for k, v in model.state_dict().items()}


def reference_output(state: dict[str, torch.Tensor]) -> torch.Tensor:
    model = WanDiT(WanDiTConfig(**CONFIG)).eval()
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return run(model)


@torch.no_grad()
def run(model: WanDiT) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(1, 16, 2, 4, 4, generator=gen)
    context = torch.randn(1, 512, 32, generator=gen)
    return model(x, torch.tensor([600.0]), context).float()


def relative_error(ours, reference) -> float:
    return ((ours - reference).abs().max() / reference.std()).item()


def is_block_linear(key: str) -> bool:
    return key.startswith("blocks.") and key.endswith(BLOCK_LINEAR)


def scaled_fp8(state, *, per_row: bool = False, naming: str = "scale_weight"):
    """(file tensors, dequantized reference weights) in a scaled-fp8 layout."""
    stored, dequantized = {}, {}
    for key, value in state.items():
        if not is_block_linear(key):
            stored[key] = dequantized[key] = value
            continue
        scale = (value.abs().amax(dim=1, keepdim=True) if per_row else value.abs().amax()) / 448
        weight = (value / scale).to(torch.float8_e4m3fn)
        layer = key[: -len(".weight")]
        stored[key] = weight
        stored[f"{layer}.{naming}"] = scale.reshape(-1) if per_row else scale
        stored[f"{layer}.scale_input"] = torch.tensor(1.0)
        dequantized[key] = weight.float() * scale
    return stored, dequantized


@pytest.mark.parametrize("stored_dtype,expected_compute,tolerance", [
    (torch.bfloat16, torch.bfloat16, 2e-2), (torch.float16, torch.float16, 5e-3)])
def test_half_precision_files_compute_as_stored(tmp_path, stored_dtype, expected_compute, tolerance):
    state = {k: v.to(stored_dtype) for k, v in random_state().items()}
    path = tmp_path / "wan_half.safetensors"
    save_file(state, path)
    reference = reference_output(state)

    as_stored = load_wan_dit(path)
    assert as_stored.compute_dtype == expected_compute
    assert as_stored.network.blocks[0].ffn[0].weight.dtype == expected_compute
    assert relative_error(run(as_stored.network), reference) <= tolerance

    widened = load_wan_dit(path, "fp32")
    assert widened.network.blocks[0].ffn[0].weight.dtype == torch.float32
    assert relative_error(run(widened.network), reference) <= 1e-5


def test_comfyui_scaled_fp8_keeps_fp8_and_matches_dequantized(tmp_path):
    stored, dequantized = scaled_fp8(random_state())
    stored["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / "wan_fp8_scaled.safetensors"
    save_file({f"model.diffusion_model.{k}" if k != "scaled_fp8" else k: v
               for k, v in stored.items()}, path)
    reference = reference_output(dequantized)

    kept = load_wan_dit(path)  # default: as stored
    q = kept.network.blocks[1].self_attn.q
    assert isinstance(q, QuantizedLinear) and q.weight.dtype == torch.float8_e4m3fn
    assert kept.compute_dtype == torch.bfloat16
    assert any("scaled fp8" in note for note in kept.notes)
    assert relative_error(run(kept.network), reference) <= 6e-2

    full = load_wan_dit(path, "fp32")
    assert full.network.blocks[1].self_attn.q.weight.dtype == torch.float32
    assert relative_error(run(full.network), reference) <= 1e-5


def test_per_layer_weight_scale_with_quantization_metadata(tmp_path):
    stored, dequantized = scaled_fp8(random_state(), per_row=True, naming="weight_scale")
    layers = {k[: -len(".weight")]: {"format": "float8_e4m3fn"} for k in stored if is_block_linear(k)}
    path = tmp_path / "wan_weight_scale.safetensors"
    save_file(stored, path, metadata={"_quantization_metadata": json.dumps({"layers": layers})})
    loaded = load_wan_dit(path, "fp32")
    assert relative_error(run(loaded.network), reference_output(dequantized)) <= 1e-5

    layers[next(iter(layers))] = {"format": "nvfp4"}
    save_file(stored, path, metadata={"_quantization_metadata": json.dumps({"layers": layers})})
    with pytest.raises(InputError, match="nvfp4"):
        load_wan_dit(path)


def test_plain_fp8_e5m2_file_dequantizes(tmp_path):
    state = {k: v.to(torch.float8_e5m2) if is_block_linear(k) else v
             for k, v in random_state().items()}
    path = tmp_path / "wan_fp8_e5m2.safetensors"
    save_file(state, path)
    as_stored = load_wan_dit(path)
    assert as_stored.network.blocks[0].ffn[2].weight.dtype == torch.float8_e5m2
    widened = load_wan_dit(path, "bf16")
    assert widened.network.blocks[0].ffn[2].weight.dtype == torch.bfloat16
    reference = reference_output({k: v.float() for k, v in state.items()})
    assert relative_error(run(widened.network), reference) <= 2e-2
    assert relative_error(run(as_stored.network), reference) <= 2e-2


def test_fp8_choice_quantizes_a_float_file(tmp_path):
    state = random_state()
    path = tmp_path / "wan_fp32.safetensors"
    save_file(state, path)
    loaded = load_wan_dit(path, "fp8_e4m3fn")
    layer = loaded.network.blocks[0].cross_attn.o
    assert isinstance(layer, QuantizedLinear) and layer.weight.dtype == torch.float8_e4m3fn
    assert loaded.network.patch_embedding.weight.dtype == torch.bfloat16
    held = {k: v for k, v in state.items() if not is_block_linear(k)}
    for name, module in loaded.network.named_modules():
        if isinstance(module, QuantizedLinear):
            held[f"{name}.weight"] = module.dequantized_weight(torch.float32)
    ours = run(loaded.network)
    assert relative_error(ours, reference_output(held)) <= 6e-2  # bf16 compute on fp8 weights
    assert relative_error(ours, reference_output(state)) <= 0.2  # + the fp8 rounding itself
    fp8_bytes = sum(p.numel() * p.element_size() for p in loaded.network.parameters())
    full_bytes = sum(v.numel() * 2 for v in state.values())
    assert fp8_bytes < 0.75 * full_bytes


def test_quantize_round_trip_is_close():
    weight = torch.randn(64, 32)
    quantized, scale = quantization.quantize_fp8(weight)
    restored = quantization.dequantize(quantized, scale, torch.float32)
    assert ((restored - weight).abs().max() / weight.abs().max()).item() < 0.07


def test_variant_detected_from_shapes_not_name(tmp_path):
    from comfyui_videodit.model_loaders.wan_dit_loader import config_from_shapes

    shapes = {"patch_embedding.weight": (1536, 16, 1, 2, 2), "text_embedding.0.weight": (1536, 4096),
              "time_embedding.0.weight": (1536, 256), "head.head.weight": (64, 1536),
              "blocks.0.ffn.0.weight": (8960, 1536), "blocks.29.ffn.0.weight": (8960, 1536),
              "blocks.0.self_attn.q.weight": (1536, 1536), "blocks.0.norm3.weight": (1536,)}
    config = config_from_shapes(shapes, "x.safetensors")
    assert (config.num_heads, config.num_layers, config.model_type) == (12, 30, "t2v")
    from comfyui_videodit.model_loaders.wan_dit_loader import _variant
    assert _variant(config) == "wan2.1-t2v-1.3B"
    shapes["patch_embedding.weight"] = (3072, 48, 1, 2, 2)
    shapes["head.head.weight"] = (192, 3072)
    config = config_from_shapes(shapes, "x.safetensors")
    assert (config.model_type, config.num_heads, _variant(config)) == ("ti2v", 24, "wan2.2-ti2v-5B")


def test_errors_say_what_to_do(tmp_path):
    vae = tmp_path / "looks_like_a_model.safetensors"
    save_file({"encoder.conv1.weight": torch.zeros(1), "decoder.conv1.weight": torch.zeros(1)}, vae)
    with pytest.raises(InputError, match="VideoDiT VAE Loader"):
        load_wan_dit(vae)

    with pytest.raises(InputError, match="not found"):
        load_wan_dit(tmp_path / "absent.safetensors")

    good = tmp_path / "wan.safetensors"
    save_file(random_state(), good)
    truncated = tmp_path / "wan_truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(InputError, match="truncated or corrupt"):
        load_wan_dit(truncated)

    partial = tmp_path / "wan_partial.safetensors"
    save_file({k: v for k, v in random_state().items() if not k.startswith("head.")}, partial)
    with pytest.raises(InputError, match="head.head.weight") as err:
        load_wan_dit(partial)
    assert "patch_embedding.weight" in str(err.value)  # lists the keys it found

    with pytest.raises(InputError, match="weight_dtype"):
        load_wan_dit(good, "int4")


def test_bad_timestep_shape_is_refused():
    model = WanDiT(WanDiTConfig(**CONFIG))
    with pytest.raises(ValueError, match="one per patch token"):
        model(torch.zeros(1, 16, 2, 4, 4), torch.zeros(1, 5), torch.zeros(1, 512, 32))


def test_loader_node(models_dir):
    from comfyui_videodit.nodes.loaders import VideoDiTModelLoader

    save_file(random_state(), models_dir / "diffusion_models" / "tiny_wan.safetensors")
    inputs = VideoDiTModelLoader.INPUT_TYPES()["required"]
    assert "tiny_wan.safetensors" in inputs["model_name"][0]
    assert list(inputs) == ["model_name", "weight_dtype"]
    (loaded,) = VideoDiTModelLoader().load("tiny_wan.safetensors", "bf16")
    assert loaded.variant == "wan-t2v-custom" and loaded.compute_dtype == torch.bfloat16
    with pytest.raises(InputError, match="VideoDiT Model Loader"):
        VideoDiTModelLoader().load("missing.safetensors", "default")


def test_original_layout_shards_load_as_one_model(tmp_path):
    """Wan's own release: original names split over shards with an index; any shard picks all."""
    state = random_state()
    keys = sorted(state)
    halves = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2:]}
    for file, names in halves.items():
        save_file({k: state[k] for k in names}, tmp_path / file)
    weight_map = {k: file for file, names in halves.items() for k in names}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    loaded = load_wan_dit(tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors")
    assert relative_error(run(loaded.network), reference_output(state)) <= 1e-5

    (tmp_path / "diffusion_pytorch_model-00001-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match="missing: diffusion_pytorch_model-00001-of-00002"):
        load_wan_dit(tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors")


def test_architecture_metadata_sets_what_shapes_cannot(tmp_path):
    """A 16-channel file marked ti2v (the demo model) gets first-frame conditioning and its
    own head count; bad metadata is refused with the entry's name."""
    from comfyui_videodit.model_loaders.wan_dit_loader import ARCHITECTURE_METADATA

    state = random_state()
    path = tmp_path / "marked.safetensors"
    save_file(state, str(path), metadata={ARCHITECTURE_METADATA: json.dumps(
        {"model_type": "ti2v", "num_heads": 4})})
    loaded = load_wan_dit(path)
    assert (loaded.config.model_type, loaded.config.num_heads) == ("ti2v", 4)
    assert loaded.latent_format == "wan21"
    plain = tmp_path / "plain.safetensors"
    save_file(state, str(plain))
    assert load_wan_dit(plain).config.model_type == "t2v"
    for bad in ("not json", json.dumps({"model_type": "flf2v"}), json.dumps({"num_heads": 3}),
                json.dumps({"layers": 2})):
        broken = tmp_path / "broken.safetensors"
        save_file(state, str(broken), metadata={ARCHITECTURE_METADATA: bad})
        with pytest.raises(InputError, match=ARCHITECTURE_METADATA.replace(".", r"\.") + "|heads|model_type"):
            load_wan_dit(broken)
