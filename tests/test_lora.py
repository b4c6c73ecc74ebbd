"""LoRA files as model patches, against hand-merged weights, diffusers and ComfyUI.

* Every format (ComfyUI/original names with lora_A/B or lora_down/up + alpha, kohya flattened
  names, diffusers/PEFT names with and without prefix, full differences, I2V image layers,
  LoHa with and without a Tucker core, LoKr with split and full factors, a Conv3d
  patch_embedding): a tiny Wan DiT (real key layout) with the LoRA gives the velocity of the
  same model whose weights the test merged by hand (``W + scale * delta``, the delta built here
  from the factors), within fp32 rounding.
* diffusers: ``WanTransformer3DModel.load_lora_adapter`` on the same PEFT file and weights gives
  the same transformer output (max |ours - diffusers| <= 1e-4 x std).
* ComfyUI (opt-in, ``VIDEODIT_COMFYUI_DIR``): ``comfy.sd.load_lora_for_models`` patches the same
  file into the same weights as ours.
* Patch behaviour: strength 0 is exact, stacked LoRAs add, branches at different strengths do
  not interfere, A14B experts each keep their own LoRA, fp8 layers get the change on the fly
  (equal to merging into the dequantized weights) and stay untouched.
* Bad input: not a LoRA (a DiT, a VAE), another width, rank mismatch, NaN, not safetensors.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_videodit.core.conditioning import ModelInputs
from comfyui_videodit.core.latent_formats import WAN21
from comfyui_videodit.core.placement import Placement
from comfyui_videodit.errors import InputError
from comfyui_videodit.families.base import LoadedWeights
from comfyui_videodit.families.lora import apply_lora, lora_patch
from comfyui_videodit.families.model import ModelPatch, VideoModel
from comfyui_videodit.families.registry import FAMILIES, load_model
from comfyui_videodit.model_loaders.wan_dit_loader import load_wan_dit
from comfyui_videodit.networks.quantized_linear import QuantizedLinear
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig
from tiny_models import CLIP_DIM, TEXT_DIM, write_dit, write_vae

TOLERANCE = 1e-5          # fp32 merge vs hand merge: max |diff| / std
STRENGTH = 0.8


# -- tiny models and inputs --------------------------------------------------------------------
@pytest.fixture(scope="module")
def dits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora_dits")
    return {"t2v": write_dit(folder, "t2v.safetensors", "t2v"),
            "i2v": write_dit(folder, "i2v.safetensors", "i2v", seed=1)}


def model_inputs(model_type: str) -> tuple[torch.Tensor, ModelInputs]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    text = torch.randn(1, 6, TEXT_DIM, generator=g)
    if model_type == "i2v":
        return x, ModelInputs(text=text, concat_latent=torch.randn(1, 20, 2, 4, 6, generator=g),
                              clip_features=torch.randn(1, 257, CLIP_DIM, generator=g))
    return x, ModelInputs(text=text)


@torch.no_grad()
def velocity(model: VideoModel, model_type: str = "t2v", sigma: float = 0.6) -> torch.Tensor:
    x, inputs = model_inputs(model_type)
    return model.run()(x, sigma, inputs)


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.std())


def shapes_of(model: VideoModel) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.network.named_parameters()}


def hand_merged(path: Path, deltas: dict[str, torch.Tensor]) -> VideoModel:
    """The model with ``deltas`` (already scaled) added to its fp32 weights by the test."""
    model = load_model(path, "fp32")
    with torch.no_grad():
        for name, delta in deltas.items():
            parameter = model.network.get_parameter(name)
            parameter.copy_(parameter + delta.reshape(parameter.shape))
    return model


# -- LoRA writers: (file tensors, {parameter: scaled delta}) -----------------------------------
def rnd(g, *shape, scale=0.1):
    return torch.randn(*shape, generator=g) * scale


def low_rank(g, shape, rank):
    """down [r, in, *kernel], up [out, r, 1...] and their product in the weight's shape."""
    down = rnd(g, rank, *shape[1:])
    up = rnd(g, shape[0], rank, *([1] * (len(shape) - 2)))
    return down, up, (up.flatten(1) @ down.flatten(1)).reshape(shape)


def kron(a, b):
    """Kronecker product written out: kron(a, b)[i*c+k, j*d+l] = a[i, j] * b[k, l]."""
    (p, q), (r, s) = a.shape, b.shape
    return torch.einsum("ij,kl->ikjl", a, b).reshape(p * r, q * s)


def tucker(core, a, b):
    """Rebuild [out, in, *kernel] from core [ra, rb, *kernel], a [ra, out], b [rb, in]."""
    left = torch.tensordot(a.T, core, dims=([1], [0]))       # [out, rb, *kernel]
    full = torch.tensordot(left, b, dims=([1], [0]))          # [out, *kernel, in]
    return full.movedim(-1, 1)


def write_factor_lora(shapes, g, strength, modules, key, roles, *, rank=4, alpha=None):
    """Plain LoRA factors for ``modules`` under ``key(module)`` with (down, up) role names."""
    tensors, expected = {}, {}
    for module in modules:
        shape = shapes[f"{module}.weight"]
        down, up, delta = low_rank(g, shape, rank)
        tensors[f"{key(module)}.{roles[0]}"] = down
        tensors[f"{key(module)}.{roles[1]}"] = up
        scale = strength
        if alpha is not None:
            tensors[f"{key(module)}.alpha"] = torch.tensor(alpha)
            scale = strength * alpha / rank
        expected[f"{module}.weight"] = scale * delta
    return tensors, expected


def comfy_lora_ab(shapes, g, strength):
    return write_factor_lora(
        shapes, g, strength, ["blocks.0.self_attn.q", "blocks.1.cross_attn.o", "blocks.0.ffn.0",
                              "head.head", "patch_embedding"],
        lambda m: f"diffusion_model.{m}", ("lora_A.weight", "lora_B.weight"), alpha=8.0)


def comfy_lora_down_up(shapes, g, strength):  # original names without any prefix
    return write_factor_lora(
        shapes, g, strength, ["blocks.0.cross_attn.k", "blocks.1.ffn.2", "time_embedding.2"],
        lambda m: m, ("lora_down.weight", "lora_up.weight"), alpha=2.0, rank=8)


def kohya(shapes, g, strength):
    return write_factor_lora(
        shapes, g, strength, ["blocks.0.self_attn.k", "blocks.1.cross_attn.v", "blocks.0.ffn.2",
                              "text_embedding.0", "time_projection.1", "blocks.1.self_attn.o"],
        lambda m: "lora_unet_" + m.replace(".", "_"), ("lora_down.weight", "lora_up.weight"),
        alpha=3.0)


DIFFUSERS_NAMES = {  # diffusers module -> original module
    "blocks.0.attn1.to_q": "blocks.0.self_attn.q",
    "blocks.1.attn1.to_out.0": "blocks.1.self_attn.o",
    "blocks.0.attn2.to_v": "blocks.0.cross_attn.v",
    "blocks.1.ffn.net.0.proj": "blocks.1.ffn.0",
    "blocks.0.ffn.net.2": "blocks.0.ffn.2",
    "proj_out": "head.head",
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
}


def diffusers_peft(shapes, g, strength, prefix="transformer."):
    tensors, expected = {}, {}
    for name, original in DIFFUSERS_NAMES.items():
        down, up, delta = low_rank(g, shapes[f"{original}.weight"], 4)
        tensors[f"{prefix}{name}.lora_A.weight"] = down
        tensors[f"{prefix}{name}.lora_B.weight"] = up
        expected[f"{original}.weight"] = strength * delta
    return tensors, expected


def diffusers_bare(shapes, g, strength):
    return diffusers_peft(shapes, g, strength, prefix="")


def differences(shapes, g, strength):
    tensors, expected = {}, {}
    for key, parameter in [("blocks.0.norm3.diff", "blocks.0.norm3.weight"),
                           ("blocks.0.norm3.diff_b", "blocks.0.norm3.bias"),
                           ("blocks.1.modulation.diff", "blocks.1.modulation"),
                           ("head.modulation.diff", "head.modulation"),
                           ("blocks.0.self_attn.q.diff_b", "blocks.0.self_attn.q.bias"),
                           ("blocks.1.self_attn.norm_k.diff", "blocks.1.self_attn.norm_k.weight"),
                           ("blocks.0.ffn.2.diff", "blocks.0.ffn.2.weight")]:
        add_diff(tensors, expected, key, shapes[parameter], parameter, g, strength)
    return tensors, expected


def add_diff(tensors, expected, key, shape, parameter, g, strength):
    """A full-weight difference ``key`` for ``parameter``, and what it adds at ``strength``."""
    diff = rnd(g, *shape, scale=0.05)
    tensors[f"diffusion_model.{key}"] = diff
    expected[parameter] = strength * diff


def image_layers(shapes, g, strength):  # Wan 2.1 I2V: CLIP projection and image attention
    tensors, expected = write_factor_lora(
        shapes, g, strength, ["img_emb.proj.1", "img_emb.proj.3", "blocks.0.cross_attn.k_img",
                              "blocks.1.cross_attn.v_img"],
        lambda m: f"diffusion_model.{m}", ("lora_down.weight", "lora_up.weight"), alpha=4.0)
    for key, parameter in [("blocks.0.cross_attn.norm_k_img.diff",
                            "blocks.0.cross_attn.norm_k_img.weight"),
                           ("img_emb.proj.0.diff", "img_emb.proj.0.weight"),
                           ("img_emb.proj.0.diff_b", "img_emb.proj.0.bias")]:
        add_diff(tensors, expected, key, shapes[parameter], parameter, g, strength)
    return tensors, expected


def loha(shapes, g, strength):
    tensors, expected = {}, {}
    rank, alpha = 4, 2.0
    out, inp = shapes["blocks.0.self_attn.v.weight"]
    w = {n: rnd(g, *s, scale=0.3) for n, s in [("w1_a", (out, rank)), ("w1_b", (rank, inp)),
                                                ("w2_a", (out, rank)), ("w2_b", (rank, inp))]}
    for n, t in w.items():
        tensors[f"diffusion_model.blocks.0.self_attn.v.hada_{n}"] = t
    tensors["diffusion_model.blocks.0.self_attn.v.alpha"] = torch.tensor(alpha)
    expected["blocks.0.self_attn.v.weight"] = (strength * alpha / rank) * (
        (w["w1_a"] @ w["w1_b"]) * (w["w2_a"] @ w["w2_b"]))
    # Tucker form on the Conv3d patch embedding: [dim, in, 1, 2, 2]
    shape = shapes["patch_embedding.weight"]
    out, inp, kernel = shape[0], shape[1], shape[2:]
    t = {n: rnd(g, *s, scale=0.3) for n, s in [
        ("w1_a", (rank, out)), ("w1_b", (rank, inp)), ("t1", (rank, rank, *kernel)),
        ("w2_a", (rank, out)), ("w2_b", (rank, inp)), ("t2", (rank, rank, *kernel))]}
    for n, v in t.items():
        tensors[f"diffusion_model.patch_embedding.hada_{n}"] = v
    expected["patch_embedding.weight"] = strength * (
        tucker(t["t1"], t["w1_a"], t["w1_b"]) * tucker(t["t2"], t["w2_a"], t["w2_b"]))
    return tensors, expected


def lokr(shapes, g, strength):
    tensors, expected = {}, {}
    # split second factor: alpha / rank applies
    out, inp = shapes["blocks.0.ffn.0.weight"]            # [64, 256]
    rank, alpha = 2, 3.0
    w1 = rnd(g, 4, 8, scale=0.5)
    w2_a, w2_b = rnd(g, out // 4, rank, scale=0.5), rnd(g, rank, inp // 8, scale=0.5)
    key = "diffusion_model.blocks.0.ffn.0"
    tensors.update({f"{key}.lokr_w1": w1, f"{key}.lokr_w2_a": w2_a, f"{key}.lokr_w2_b": w2_b,
                    f"{key}.alpha": torch.tensor(alpha)})
    expected["blocks.0.ffn.0.weight"] = (strength * alpha / rank) * kron(w1, w2_a @ w2_b)
    # full factors: the stored alpha does not apply (LyCORIS)
    out, inp = shapes["blocks.1.self_attn.o.weight"]
    w1, w2 = rnd(g, 16, 16, scale=0.3), rnd(g, out // 16, inp // 16, scale=0.3)
    key = "diffusion_model.blocks.1.self_attn.o"
    tensors.update({f"{key}.lokr_w1": w1, f"{key}.lokr_w2": w2, f"{key}.alpha": torch.tensor(5.0)})
    expected["blocks.1.self_attn.o.weight"] = strength * kron(w1, w2)
    # split first factor
    out, inp = shapes["blocks.1.cross_attn.q.weight"]
    w1_a, w1_b = rnd(g, 8, 2, scale=0.5), rnd(g, 2, 8, scale=0.5)
    w2 = rnd(g, out // 8, inp // 8, scale=0.3)
    key = "lora_unet_blocks_1_cross_attn_q"
    tensors.update({f"{key}.lokr_w1_a": w1_a, f"{key}.lokr_w1_b": w1_b, f"{key}.lokr_w2": w2,
                    f"{key}.alpha": torch.tensor(1.0)})
    expected["blocks.1.cross_attn.q.weight"] = (strength * 1.0 / 2) * kron(w1_a @ w1_b, w2)
    return tensors, expected


FORMATS = {  # name: (writer, model type)
    "comfy_lora_A_B_alpha_conv": (comfy_lora_ab, "t2v"),
    "original_lora_down_up": (comfy_lora_down_up, "t2v"),
    "kohya": (kohya, "t2v"),
    "diffusers_peft": (diffusers_peft, "t2v"),
    "diffusers_no_prefix": (diffusers_bare, "t2v"),
    "diff_and_diff_b": (differences, "t2v"),
    "i2v_image_layers": (image_layers, "i2v"),
    "loha_and_tucker_conv": (loha, "t2v"),
    "lokr": (lokr, "t2v"),
}


def summed(*expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for deltas in expected:
        for name, delta in deltas.items():
            total[name] = total[name] + delta if name in total else delta
    return total


def write(tmp_path: Path, name: str, tensors: dict) -> Path:
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def make_lora(tmp_path, writer, model, strength=STRENGTH, seed=0, name=None):
    tensors, expected = writer(shapes_of(model), torch.Generator().manual_seed(seed), strength)
    path = write(tmp_path, name or f"{writer.__name__}_{seed}.safetensors", tensors)
    return path, tensors, expected


# -- every format equals a hand merge ----------------------------------------------------------
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_equals_a_hand_merge(fmt, dits, tmp_path):
    writer, model_type = FORMATS[fmt]
    base = load_model(dits[model_type], "fp32")
    path, tensors, expected = make_lora(tmp_path, writer, base)

    patch, report = lora_patch(base, path, STRENGTH)
    assert report.matched_tensors == report.tensors == len(tensors), report
    assert report.weights == len(expected) and not report.unmatched
    patched = base.with_patch(patch)

    ours = velocity(patched, model_type)
    reference = velocity(hand_merged(dits[model_type], expected), model_type)
    unpatched = velocity(base, model_type)
    assert relative_error(unpatched, reference) > 100 * TOLERANCE   # the LoRA does something
    assert relative_error(ours, reference) <= TOLERANCE, fmt


def test_merged_weights_are_the_hand_merged_weights(dits, tmp_path):
    """The same check on the weights themselves, for every parameter a format touches."""
    base = load_model(dits["t2v"], "fp32")
    originals = {k: v.clone() for k, v in base.network.state_dict().items()}
    for writer in (comfy_lora_ab, kohya, diffusers_peft, differences, loha, lokr):
        path, _, expected = make_lora(tmp_path, writer, base)
        patch, _ = lora_patch(base, path, STRENGTH)
        for name, update in patch.weight_updates(base).items():
            torch.testing.assert_close(update(originals[name]), originals[name] + expected[name],
                                       rtol=1e-6, atol=1e-7)
        assert set(patch.weight_updates(base)) == set(expected)


# -- diffusers ---------------------------------------------------------------------------------
def test_peft_file_matches_diffusers_load_lora_adapter(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    torch.manual_seed(11)
    reference = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, eps=1e-6).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            parameter.copy_(base + 0.1 * torch.randn_like(parameter))
    weights = tmp_path / "transformer.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    ours = load_model(weights, "fp32")

    g = torch.Generator().manual_seed(12)
    diffusers_shapes = dict(reference.named_parameters())
    lora = {}
    for module in list(DIFFUSERS_NAMES) + ["blocks.1.attn2.to_k", "blocks.0.attn1.to_v"]:
        down, up, _ = low_rank(g, tuple(diffusers_shapes[f"{module}.weight"].shape), 4)
        lora[f"transformer.{module}.lora_A.weight"] = down * 3
        lora[f"transformer.{module}.lora_B.weight"] = up * 3
    path = write(tmp_path, "peft_lora.safetensors", lora)
    strength = 0.7

    x, inputs = model_inputs("t2v")
    context = torch.cat([inputs.text, torch.zeros(1, 512 - inputs.text.shape[1], TEXT_DIM)], 1)
    with torch.no_grad():
        plain = reference(x, torch.tensor([731.0]), context, return_dict=False)[0]
        state = diffusers.WanPipeline.lora_state_dict(str(path))
        state = state[0] if isinstance(state, tuple) else state
        reference.load_lora_adapter(state, prefix="transformer", adapter_name="test")
        reference.set_adapters(["test"], weights=[strength])
        expected = reference(x, torch.tensor([731.0]), context, return_dict=False)[0]
        # sigma 0.7315 -> integer timestep 731, as handed to diffusers
        got = apply_lora(ours, path, strength).run()(x, 0.7315, inputs)
    error = relative_error(got, expected)
    print(f"LoRA vs diffusers load_lora_adapter: max error {error:.2e} x std")
    assert relative_error(plain, expected) > 1e-2          # the adapter changed the output
    assert error <= 1e-4


# -- ComfyUI (opt-in) --------------------------------------------------------------------------
COMFYUI_DIR = os.environ.get("VIDEODIT_COMFYUI_DIR")
COMFYUI_PYTHON = os.environ.get("VIDEODIT_COMFYUI_PYTHON", sys.executable)
COMFY_PATCH = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch
    from safetensors.torch import load_file, save_file
    from comfy.cli_args import args
    args.cpu = True  # before comfy.model_management is imported: no GPU probing
    import comfy.sd
    import comfy.utils
    model = comfy.sd.load_diffusion_model_state_dict(load_file(sys.argv[2]),
                                                     model_options={"dtype": torch.float32})
    lora = comfy.utils.load_torch_file(sys.argv[3], safe_load=True)
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, float(sys.argv[4]), 0.0)
    patched.patch_model(force_patch_weights=True)
    state = patched.model.diffusion_model.state_dict()
    save_file({k: v.float().contiguous() for k, v in state.items()}, sys.argv[5])
""")


@pytest.mark.comfyui
@pytest.mark.skipif(not COMFYUI_DIR, reason="set VIDEODIT_COMFYUI_DIR to a ComfyUI checkout")
@pytest.mark.parametrize("writers", [(comfy_lora_ab, differences, loha, lokr), (kohya,)],
                         ids=["comfyui_names", "kohya"])
def test_comfyui_patches_the_same_weights(writers, tmp_path):
    # ComfyUI detects text_dim 4096 and freq_dim 256 (not from shapes), so the model has those.
    config = WanDiTConfig(dim=256, ffn_dim=64, num_heads=2, num_layers=2, text_dim=4096,
                          freq_dim=256)
    torch.manual_seed(5)
    network = WanDiT(config)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(0.05 * torch.randn_like(parameter))
    model_file = write(tmp_path, "tiny_wan_comfy.safetensors", network.state_dict())
    ours = load_model(model_file, "fp32")
    tensors = {}
    for seed, writer in enumerate(writers):
        # (the lokr writer's kohya-named layer is fine: ComfyUI maps lora_unet_ names too)
        tensors.update(writer(shapes_of(ours), torch.Generator().manual_seed(seed), 1.0)[0])
    # ComfyUI rebuilds Tucker cores of 2-D kernels only; the Conv3d patch embedding's LoHa
    # (checked against the hand merge above) is left out here.
    tensors = {k: v for k, v in tensors.items()
               if not k.startswith("diffusion_model.patch_embedding.hada")}
    lora_file = write(tmp_path, "mixed_lora.safetensors", tensors)
    strength = 0.6

    env = {k: v for k, v in os.environ.items() if k != "VIDEODIT_STANDALONE"}
    done = subprocess.run([COMFYUI_PYTHON, "-c", COMFY_PATCH, COMFYUI_DIR, str(model_file),
                           str(lora_file), str(strength), str(tmp_path / "native.safetensors")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    native = load_file(str(tmp_path / "native.safetensors"))

    patch, report = lora_patch(ours, lora_file, strength)
    assert report.matched_tensors == report.tensors
    state = {k: v.clone() for k, v in ours.network.state_dict().items()}
    for name, update in patch.weight_updates(ours).items():
        state[name] = update(state[name])
    changed = [k for k in native if not torch.equal(native[k], load_file(str(model_file))[k])]
    assert set(changed) == set(patch.weight_updates(ours)), "ComfyUI changed other weights"
    for key, value in native.items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=key)


# -- patch behaviour ---------------------------------------------------------------------------
def test_strength_zero_is_exactly_the_unpatched_model(dits, tmp_path):
    base = load_model(dits["t2v"], "fp32")
    path, _, _ = make_lora(tmp_path, comfy_lora_ab, base)
    alone = velocity(base)
    assert apply_lora(base, path, 0.0) is base                # the node adds nothing at 0
    zero = base.with_patch(lora_patch(base, path, 0.0)[0])     # and the merge itself is exact
    assert torch.equal(velocity(zero), alone)


def test_stacked_loras_equal_their_sum(dits, tmp_path):
    base = load_model(dits["t2v"], "fp32")
    first, _, expected_a = make_lora(tmp_path, comfy_lora_ab, base, strength=1.0)
    second, _, expected_b = make_lora(tmp_path, diffusers_peft, base, strength=-0.5, seed=1)
    assert set(expected_a) & set(expected_b)                   # they share layers
    stacked = apply_lora(apply_lora(base, first, 1.0), second, -0.5)
    assert len(stacked.patches) == 2 and base.patches == ()
    total = summed(expected_a, expected_b)
    error = relative_error(velocity(stacked), velocity(hand_merged(dits["t2v"], total)))
    assert error <= TOLERANCE


def test_branches_at_different_strengths_do_not_interfere(dits, tmp_path):
    base = load_model(dits["t2v"], "fp32")
    path, _, full = make_lora(tmp_path, kohya, base, strength=1.0)
    original = {k: v.clone() for k, v in base.network.state_dict().items()}
    alone = velocity(base)
    strong, half = apply_lora(base, path, 1.0), apply_lora(base, path, 0.5)

    v_strong, v_half, v_base, v_strong_again = (velocity(strong), velocity(half), velocity(base),
                                                velocity(strong))
    assert torch.equal(v_base, alone) and torch.equal(v_strong, v_strong_again)
    assert relative_error(v_strong, velocity(hand_merged(dits["t2v"], full))) <= TOLERANCE
    halved = {k: 0.5 * v for k, v in full.items()}
    assert relative_error(v_half, velocity(hand_merged(dits["t2v"], halved))) <= TOLERANCE
    base.restore_weights()
    assert all(torch.equal(v, original[k]) for k, v in base.network.state_dict().items())


class CountCalls(ModelPatch):
    name = "count calls"

    def __init__(self):
        self.calls = 0

    def wrap_velocity(self, velocity_call, model, run):
        def counted(x, sigma, inputs):
            self.calls += 1
            return velocity_call(x, sigma, inputs)
        return counted


def _hand_merge_comfy_file(path: Path, strength: float) -> dict[str, torch.Tensor]:
    """Deltas of a ComfyUI-named lora_down/lora_up + alpha + diff_b file, computed here."""
    state, deltas = load_file(str(path)), {}
    for key in state:
        if key.endswith(".lora_down.weight"):
            module = key[len("diffusion_model."):-len(".lora_down.weight")]
            down = state[key]
            up = state[key.replace("lora_down", "lora_up")]
            alpha = float(state[key.replace(".lora_down.weight", ".alpha")])
            deltas[f"{module}.weight"] = strength * alpha / down.shape[0] * (up @ down)
        elif key.endswith(".diff_b"):
            deltas[key[len("diffusion_model."):-len(".diff_b")] + ".bias"] = strength * state[key]
    return deltas


def test_a14b_experts_each_keep_their_own_lora_and_cfg_1_makes_one_call_per_step(
        tiny_models_dir, monkeypatch):
    from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent
    from comfyui_videodit.nodes.lora import VideoDiTLoraLoader
    from comfyui_videodit.nodes.sampling import VideoDiTSampler
    from comfyui_videodit.nodes.text import VideoDiTTextEncode, VideoDiTTextEncoderLoader
    from comfyui_videodit.nodes.vae import VideoDiTVAELoader
    from comfyui_videodit.runtime import model_folders

    monkeypatch.setattr(model_folders, "_models_dir_override", tiny_models_dir)
    encoder = VideoDiTTextEncoderLoader().load("tiny_umt5.safetensors", "fp32", "cpu")[0]
    cond = VideoDiTTextEncode().encode(encoder, "a red ball rolls", "blurry")[0]
    vae = VideoDiTVAELoader().load("tiny_vae21.safetensors", "fp32")[0]
    latent = VideoDiTEmptyLatent().make(vae, 32, 32, 5, 1)[0]
    folder = tiny_models_dir / "diffusion_models"

    def sample(high, low):
        return VideoDiTSampler().sample(high, cond, latent, 3, 4, 1.0, 5.0, "euler", 1.0,
                                        model_low_noise=low)[0]["samples"]

    high = load_model(folder / "tiny_t2v.safetensors", "fp32")
    low = load_model(folder / "tiny_t2v_low.safetensors", "fp32")
    loader = VideoDiTLoraLoader()
    high_lora = loader.load(high, "tiny_t2v_lora.safetensors", 1.0)[0]
    low_lora = loader.load(low, "tiny_t2v_low_lora.safetensors", 1.0)[0]
    counters = (CountCalls(), CountCalls())
    ours = sample(high_lora.with_patch(counters[0]), low_lora.with_patch(counters[1]))
    # shift 5, 4 steps: sigmas 1, 0.94 above the 0.875 boundary (high), 0.83, 0.63 below (low);
    # cfg 1: one pass per step, no negative prompt pass
    assert (counters[0].calls, counters[1].calls) == (2, 2)

    loras = tiny_models_dir / "loras"
    reference = sample(
        hand_merged(folder / "tiny_t2v.safetensors",
                    _hand_merge_comfy_file(loras / "tiny_t2v_lora.safetensors", 1.0)),
        hand_merged(folder / "tiny_t2v_low.safetensors",
                    _hand_merge_comfy_file(loras / "tiny_t2v_low_lora.safetensors", 1.0)))
    assert relative_error(ours, reference) <= TOLERANCE
    swapped = sample(loader.load(high, "tiny_t2v_low_lora.safetensors", 1.0)[0],
                     loader.load(low, "tiny_t2v_lora.safetensors", 1.0)[0])
    assert relative_error(swapped, reference) > 100 * TOLERANCE


# -- fp8 layers: the change on the fly ---------------------------------------------------------
def _fp8_model(path: Path) -> VideoModel:
    """fp8 block linears, everything else and the compute in fp32: isolates the LoRA path."""
    loaded = load_wan_dit(path, "fp8_e4m3fn", compute_dtype=torch.float32)
    weights = LoadedWeights(loaded.network, loaded.config, loaded.variant, WAN21,
                            loaded.compute_dtype, loaded.file_name)
    return VideoModel.from_loaded(weights, FAMILIES["wan"], Placement(loaded.network, "fp8"))


def _dequantized_copy(model: VideoModel, deltas: dict[str, torch.Tensor]) -> VideoModel:
    network = model.network
    config = WanDiTConfig(**{**vars(network.config), "fp8_linears": False})
    plain = WanDiT(config).eval()
    modules = dict(network.named_modules())
    state = {}
    for name, tensor in plain.state_dict().items():
        module_path, _, leaf = name.rpartition(".")
        module = modules[module_path]
        value = (module.dequantized_weight(torch.float32)
                 if isinstance(module, QuantizedLinear) and leaf == "weight"
                 else network.state_dict()[name])
        state[name] = value.float() + deltas.get(name, 0)
    plain.load_state_dict(state)
    weights = LoadedWeights(plain, config, model.variant, WAN21, torch.float32, "dequantized")
    return VideoModel.from_loaded(weights, FAMILIES["wan"], Placement(plain, "plain"))


def test_fp8_layers_get_the_change_on_the_fly(dits, tmp_path):
    model = _fp8_model(dits["t2v"])
    assert isinstance(model.network.blocks[0].self_attn.q, QuantizedLinear)
    tensors, expected = comfy_lora_ab(shapes_of(model), torch.Generator().manual_seed(0), 1.0)
    more, expected_loha = loha(shapes_of(model), torch.Generator().manual_seed(1), 1.0)
    # (only the LoHa on an fp8 layer: both files change patch_embedding, whose alpha the
    # comfy writer stores would also scale the LoHa there)
    tensors.update({k: v for k, v in more.items() if "patch_embedding" not in k})
    expected["blocks.0.self_attn.v.weight"] = expected_loha["blocks.0.self_attn.v.weight"]
    bias = torch.randn(256) * 0.05
    tensors["diffusion_model.blocks.0.self_attn.q.diff_b"] = bias
    expected["blocks.0.self_attn.q.bias"] = bias
    path = write(tmp_path, "fp8_lora.safetensors", tensors)
    fp8_before = {k: v.clone() for k, v in model.network.state_dict().items()
                  if v.dtype == torch.float8_e4m3fn}

    patch, report = lora_patch(model, path, 1.0)
    # q, cross o, ffn.0 (low rank) and v (LoHa, a full delta) are fp8: beside the weight
    assert report.on_the_fly == 4 and report.weights == len(expected)
    reference = velocity(_dequantized_copy(model, expected))   # (before the merge below)
    got = velocity(model.with_patch(patch))
    error = relative_error(got, reference)
    print(f"fp8 on the fly vs merge into dequantized weights: {error:.2e} x std")
    assert error <= TOLERANCE
    # the fp8 weights were never rewritten, and no hook outlives the call
    after = model.network.state_dict()
    assert all(torch.equal(after[k].view(torch.uint8), v.view(torch.uint8))
               for k, v in fp8_before.items())
    assert not any(m._forward_hooks for m in model.network.modules())
    assert torch.equal(velocity(model), velocity(_fp8_model(dits["t2v"])))


# -- key report and bad input ------------------------------------------------------------------
def test_partial_match_warns_with_count_and_names(dits, tmp_path, caplog):
    base = load_model(dits["t2v"], "fp32")
    i2v_shapes = shapes_of(load_model(dits["i2v"], "fp32"))
    tensors, _ = image_layers(i2v_shapes, torch.Generator().manual_seed(0), 1.0)
    plain, _ = comfy_lora_down_up(i2v_shapes, torch.Generator().manual_seed(1), 1.0)
    path = write(tmp_path, "i2v_lora.safetensors", {**tensors, **plain})
    with caplog.at_level(logging.INFO, logger="comfyui_videodit.families.lora"):
        _, report = lora_patch(base, path, 1.0)
    assert report.matched_tensors == len(plain) and report.tensors == len(plain) + len(tensors)
    text = caplog.text
    assert f"{len(plain)} of {len(plain) + len(tensors)} tensors matched" in text
    assert f"{len(tensors)} of {len(plain) + len(tensors)} tensors change no weight" in text
    assert "img_emb" in text or "k_img" in text


def _error(model, path, node=True) -> InputError:
    from comfyui_videodit.nodes.lora import VideoDiTLoraLoader
    from comfyui_videodit.runtime import model_folders

    with pytest.raises(InputError) as caught:
        if node:
            original = model_folders._models_dir_override
            model_folders._models_dir_override = path.parent.parent
            try:
                VideoDiTLoraLoader().load(model, path.name, 1.0)
            finally:
                model_folders._models_dir_override = original
        else:
            lora_patch(model, path, 1.0)
    return caught.value


@pytest.fixture
def loras(tmp_path):
    folder = tmp_path / "models" / "loras"
    folder.mkdir(parents=True)
    return folder


def test_a_diffusion_model_or_vae_is_not_a_lora(dits, loras):
    base = load_model(dits["t2v"], "fp32")
    dit = loras / "wan_dit.safetensors"
    dit.write_bytes(dits["t2v"].read_bytes())
    err = _error(base, dit)
    assert err.node == "VideoDiT LoRA Loader" and err.input == "lora_name"
    assert "is a Wan diffusion model, not a LoRA" in str(err)
    assert "VideoDiT Model Loader" in err.fix
    vae = write_vae(loras, "wan_vae.safetensors")
    err = _error(base, vae)
    assert "is a Wan VAE, not a LoRA" in str(err) and "VideoDiT VAE Loader" in err.fix


def test_a_lora_for_another_width_is_refused_with_both_widths(dits, tmp_path):
    base = load_model(dits["t2v"], "fp32")
    wide = {f"{k}.weight": (5120, 5120) for k in ("blocks.0.self_attn.q", "blocks.0.cross_attn.k")}
    tensors, _ = write_factor_lora(wide, torch.Generator().manual_seed(0), 1.0,
                                   ["blocks.0.self_attn.q", "blocks.0.cross_attn.k"],
                                   lambda m: f"diffusion_model.{m}",
                                   ("lora_down.weight", "lora_up.weight"), rank=2)
    err = _error(base, write(tmp_path, "lora_14b.safetensors", tensors), node=False)
    assert "this LoRA targets a 5120-wide (Wan 14B / Wan 2.2 A14B) model" in str(err)
    assert "the loaded model is 256-wide" in str(err) and err.fix


def test_names_of_another_model_are_refused(dits, tmp_path):
    base = load_model(dits["t2v"], "fp32")
    tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.ones(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.ones(8, 4)}
    err = _error(base, write(tmp_path, "sd_lora.safetensors", tensors), node=False)
    assert "none of the 2 tensors" in str(err) and "another kind of model" in str(err)


def test_rank_mismatch_nan_and_pickle_files_are_refused(dits, tmp_path):
    base = load_model(dits["t2v"], "fp32")
    bad_rank = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.ones(4, 256),
                "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.ones(256, 8)}
    err = _error(base, write(tmp_path, "rank.safetensors", bad_rank), node=False)
    assert "disagree on the rank" in str(err) and "blocks.0.self_attn.q" in str(err)

    nan = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.ones(4, 256),
           "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.full((256, 4), float("nan"))}
    err = _error(base, write(tmp_path, "nan.safetensors", nan), node=False)
    assert "NaN or infinite" in str(err) and "lora_B" in str(err)

    missing = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.ones(4, 256)}
    err = _error(base, write(tmp_path, "half.safetensors", missing), node=False)
    assert "damaged" in str(err) and "no up" in str(err)

    pickled = tmp_path / "lora.pt"
    torch.save(bad_rank, pickled)
    err = _error(base, pickled, node=False)
    assert "not a .safetensors file" in str(err)
    # nothing was applied by any of these
    assert base.patches == ()
