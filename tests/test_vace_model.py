"""Wan VACE models (Wan 2.1 VACE 1.3B/14B, Wan 2.2 VACE-Fun A14B): network, loader, sampler.

* Parity with diffusers' ``WanVACETransformer3DModel`` on tiny random weights (4 layers, VACE
  hints after layers 0 and 2 or 0 and 3, 96 context channels), fp32, hint strength 1 and 0.6:
  diffusers' own ``save_pretrained`` folder and a bare diffusers-layout file go through our
  loader; our original-layout file (ComfyUI's names) goes through our loader and, through
  diffusers' own converter, into the diffusers model. Tolerance: max |ours - diffusers| <=
  1e-4 x std(diffusers output). Leaving the VACE context out moves the output by about 3 x std,
  so the hints are what is being compared.
* fp8: a ComfyUI scaled-fp8 file keeps the VACE blocks' linears in fp8 and computes what the
  dequantized weights compute.
* Loader: the released shapes give the released VACE layers and variant names, in both layouts.
* The per-call options (block streaming, text key/value reuse, compiled block stand-ins) see the
  VACE blocks in the order they run and change no number.
* Sampler: both guidance passes get the context (apart and stacked), the reference frames are
  cut from the result, and wrong combinations are refused before any model call.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_attention_backends import StubCompiler
from test_block_swap import CopyCounter
from test_dit_parity import (FFN, FREQ_DIM, HEADS, TEXT_DIM, TOLERANCE, diffusers_kwargs,
                             relative_error)
from test_text_kv_reuse import make_model
from tiny_models import randomize_parameters

from comfyui_videodit.core.conditioning import (FIRST_FRAMES_KEY, VACE_KEY, ModelInputs,
                                                VaceInputs, VideoDiTConditioning)
from comfyui_videodit.core.run_info import RunInfo
from comfyui_videodit.core.streamed_placement import StreamedPlacement
from comfyui_videodit.errors import InputError
from comfyui_videodit.families import speed_options
from comfyui_videodit.families.block_swap import BlockSwap
from comfyui_videodit.families.speed_options import BlockCompiler, SpeedOptions
from comfyui_videodit.families.wan import WanFamily
from comfyui_videodit.model_loaders import quantization
from comfyui_videodit.model_loaders.wan_dit_keys import diffusers_to_original
from comfyui_videodit.model_loaders.wan_dit_loader import (config_from_shapes, load_wan_dit,
                                                           looks_like_wan_dit)
from comfyui_videodit.networks.quantized_linear import QuantizedLinear
from comfyui_videodit.networks.wan_dit import (CrossAttentionCache, WanDiT, WanDiTConfig,
                                               WanVaceBlock)
from comfyui_videodit.samplers.denoise import SamplingSettings, flowedit_video, sample_video

diffusers = pytest.importorskip("diffusers")

DIM, LAYERS, VACE_IN = 256, 4, 96   # 256 wide: two 128-channel heads, as the loader assumes
GRID = (3, 4, 6)                   # latent frames, height, width


pytestmark = pytest.mark.usefixtures("one_thread")


def reference_model(vace_layers: tuple[int, ...]):
    kwargs = {**diffusers_kwargs("t2v"), "num_layers": LAYERS, "vace_layers": list(vace_layers),
              "vace_in_channels": VACE_IN}
    return randomize_parameters(diffusers.WanVACETransformer3DModel(**kwargs).eval(), seed=1)


def our_vace_config(vace_layers=(0, 2), **changes) -> WanDiTConfig:
    settings = dict(dim=DIM, ffn_dim=FFN, num_heads=HEADS, num_layers=LAYERS, text_dim=TEXT_DIM,
                    freq_dim=FREQ_DIM, vace_layers=vace_layers, vace_in_dim=VACE_IN)
    return WanDiTConfig(**{**settings, **changes})


def forward_inputs(batch: int = 2) -> dict:
    g = torch.Generator().manual_seed(3)
    return dict(x=torch.randn(batch, 16, *GRID, generator=g),
                timestep=torch.tensor([731.0, 250.0][:batch]),
                context=torch.randn(batch, 512, TEXT_DIM, generator=g),
                vace_context=torch.randn(batch, VACE_IN, *GRID, generator=g))


@torch.no_grad()
def run_reference(model, args: dict, strength: float) -> torch.Tensor:
    scale = torch.full((len(model.config.vace_layers),), strength)
    return model(args["x"], args["timestep"], args["context"],
                 control_hidden_states=args["vace_context"], control_hidden_states_scale=scale,
                 return_dict=False)[0]


@torch.no_grad()
def run_ours(network: WanDiT, args: dict, strength: float, **options) -> torch.Tensor:
    return network(args["x"], args["timestep"], args["context"],
                   vace_context=args["vace_context"], vace_strength=strength, **options)


def assert_matches_reference(network: WanDiT, reference) -> None:
    args = forward_inputs()
    for strength in (1.0, 0.6):
        error = relative_error(run_ours(network, args, strength),
                               run_reference(reference, args, strength))
        assert error <= TOLERANCE, f"strength {strength}: max error {error:.2e} x std"
    without_hints = network(args["x"], args["timestep"], args["context"])
    assert relative_error(without_hints, run_reference(reference, args, 1.0)) > 0.5


# -- parity with diffusers --------------------------------------------------------------------

def test_diffusers_folder_loads_to_the_same_output_with_its_listed_vace_layers(tmp_path):
    # Hints after layers 0 and 3: not the even spacing a bare file implies, so this passes
    # only when the folder's config.json is read.
    reference = reference_model((0, 3))
    folder = tmp_path / "transformer"
    reference.save_pretrained(folder, max_shard_size="600KB")
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) > 1
    loaded = load_wan_dit(shards[0])
    assert loaded.config.vace_layers == (0, 3) and loaded.config.vace_in_dim == VACE_IN
    assert loaded.variant == "wan-vace-custom" and "layout: diffusers" in loaded.notes
    assert_matches_reference(loaded.network, reference)


def test_diffusers_single_file_derives_evenly_spaced_vace_layers(tmp_path):
    reference = reference_model((0, 2))
    path = tmp_path / "wan_vace_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    loaded = load_wan_dit(path)
    assert loaded.config.vace_layers == (0, 2) and loaded.config.num_heads == HEADS
    assert_matches_reference(loaded.network, reference)


def test_original_layout_matches_diffusers_through_its_own_converter(tmp_path):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    ours = randomize_parameters(WanDiT(our_vace_config()).eval(), seed=2)
    original = {f"model.diffusion_model.{k}": v.clone() for k, v in ours.state_dict().items()}
    assert "model.diffusion_model.vace_blocks.0.before_proj.weight" in original
    assert "model.diffusion_model.vace_blocks.1.before_proj.weight" not in original
    reference = reference_model((0, 2))
    reference.load_state_dict(convert_wan_transformer_to_diffusers(dict(original)), strict=True)
    assert_matches_reference(ours, reference)

    path = tmp_path / "wan_vace_original.safetensors"
    save_file(original, path)
    loaded = load_wan_dit(path)
    assert loaded.config.vace_layers == (0, 2) and "layout: original" in loaded.notes
    assert_matches_reference(loaded.network, reference)


def test_comfyui_scaled_fp8_file_keeps_the_vace_linears_in_fp8(tmp_path):
    state = randomize_parameters(WanDiT(our_vace_config()), seed=5).state_dict()
    stored, dequantized = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for key, value in state.items():
        linear = key.startswith(("blocks.", "vace_blocks.")) and value.ndim == 2
        if linear:
            weight, scale = quantization.quantize_fp8(value)
            stored[key], stored[key[: -len("weight")] + "scale_weight"] = weight, scale
            value = quantization.dequantize(weight, scale, torch.float32)
        stored.setdefault(key, value)
        dequantized[key] = value
    path = tmp_path / "wan_vace_fp8_scaled.safetensors"
    save_file({k: v.contiguous() for k, v in stored.items()}, path)
    reference = WanDiT(our_vace_config()).eval()
    reference.load_state_dict(dequantized, strict=True)
    args = forward_inputs(batch=1)
    expected = run_ours(reference, args, 0.8)

    kept = load_wan_dit(path)
    vace_blocks = kept.network.vace_blocks
    for layer in (vace_blocks[0].before_proj, vace_blocks[1].after_proj, vace_blocks[1].ffn[0],
                  vace_blocks[0].cross_attn.k, kept.network.blocks[3].self_attn.o):
        assert isinstance(layer, QuantizedLinear) and layer.weight.dtype == torch.float8_e4m3fn
    assert kept.compute_dtype == torch.bfloat16
    assert relative_error(run_ours(kept.network, args, 0.8), expected) <= 6e-2
    widened = load_wan_dit(path, "fp32")
    assert relative_error(run_ours(widened.network, args, 0.8), expected) <= 1e-5


# -- the loader -------------------------------------------------------------------------------

def released_shapes(dim: int, ffn: int, layers: int, vace_blocks: int) -> dict:
    shapes = {"patch_embedding.weight": (dim, 16, 1, 2, 2), "text_embedding.0.weight": (dim, 4096),
              "time_embedding.0.weight": (dim, 256), "head.head.weight": (64, dim),
              "blocks.0.self_attn.q.weight": (dim, dim), "blocks.0.norm3.weight": (dim,),
              "vace_patch_embedding.weight": (dim, 96, 1, 2, 2),
              "vace_blocks.0.before_proj.weight": (dim, dim)}
    shapes.update({f"blocks.{n}.ffn.0.weight": (ffn, dim) for n in range(layers)})
    shapes.update({f"vace_blocks.{n}.after_proj.weight": (dim, dim) for n in range(vace_blocks)})
    return shapes


@pytest.mark.parametrize("dim,ffn,layers,vace_blocks,vace_layers,variant", [
    (1536, 8960, 30, 15, tuple(range(0, 30, 2)), "wan2.1-vace-1.3B"),
    (5120, 13824, 40, 8, tuple(range(0, 40, 5)), "wan2.1-vace-14B"),   # and VACE-Fun A14B
])
def test_released_vace_shapes_give_their_layers_and_variant(dim, ffn, layers, vace_blocks,
                                                            vace_layers, variant):
    from comfyui_videodit.model_loaders.wan_dit_loader import _variant

    shapes = released_shapes(dim, ffn, layers, vace_blocks)
    assert looks_like_wan_dit(shapes)
    config = config_from_shapes(shapes, "vace.safetensors")
    assert (config.model_type, config.in_dim, config.vace_in_dim) == ("t2v", 16, 96)
    assert config.vace_layers == vace_layers and _variant(config) == variant
    plain = {k: v for k, v in shapes.items() if not k.startswith("vace_")}
    assert not config_from_shapes(plain, "t2v.safetensors").has_vace


@pytest.mark.parametrize("diffusers_name,original_name", [
    ("vace_blocks.0.proj_in.weight", "vace_blocks.0.before_proj.weight"),
    ("vace_blocks.7.proj_out.bias", "vace_blocks.7.after_proj.bias"),
    ("vace_blocks.2.attn2.to_k.weight", "vace_blocks.2.cross_attn.k.weight"),
    ("vace_blocks.2.norm2.bias", "vace_blocks.2.norm3.bias"),
    ("vace_blocks.3.scale_shift_table", "vace_blocks.3.modulation"),
    ("vace_patch_embedding.bias", "vace_patch_embedding.bias"),
    ("proj_out.weight", "head.head.weight"),          # the model's own head stays the head
    ("blocks.1.proj_out.weight", "blocks.1.proj_out.weight"),   # main blocks have none
])
def test_diffusers_vace_names_map_like_the_main_blocks(diffusers_name, original_name):
    assert diffusers_to_original(diffusers_name) == original_name


def test_incomplete_vace_files_are_refused(tmp_path):
    state = WanDiT(our_vace_config()).state_dict()
    for dropped in ("vace_patch_embedding.", "vace_blocks."):
        path = tmp_path / "partial.safetensors"
        save_file({k: v.contiguous() for k, v in state.items() if not k.startswith(dropped)}, path)
        with pytest.raises(InputError, match="complete Wan VACE model"):
            load_wan_dit(path)
    # the VACE blocks alone (sold to pair with a separate text-to-video model)
    vace_only = {f"model.diffusion_model.{k}": v.contiguous() for k, v in state.items()
                 if k.startswith("vace_")}
    assert looks_like_wan_dit(vace_only)   # claimed by the Wan family, to be refused clearly
    path = tmp_path / "vace_module.safetensors"
    save_file(vace_only, path)
    with pytest.raises(InputError, match="only the VACE blocks") as error:
        load_wan_dit(path)
    assert "complete Wan VACE model" in error.value.fix


# -- per-call options -------------------------------------------------------------------------

def tiny_vace_network(vace_layers=(0, 2), layers: int = 4) -> WanDiT:
    config = WanDiTConfig(dim=64, ffn_dim=96, num_heads=2, num_layers=layers, text_dim=32,
                          freq_dim=32, vace_layers=vace_layers)
    return randomize_parameters(WanDiT(config).eval(), seed=4, scale=0.1)


def small_inputs(batch: int = 1, frames: int = 3) -> dict:
    g = torch.Generator().manual_seed(8)
    return dict(x=torch.randn(batch, 16, frames, 4, 4, generator=g),
                timestep=torch.full((batch,), 700.0),
                context=torch.randn(batch, 20, 32, generator=g),
                vace_context=torch.randn(1, VACE_IN, frames, 4, 4, generator=g))


def test_blocks_run_and_stream_in_order_with_the_same_numbers(monkeypatch):
    network = tiny_vace_network()
    main, vace = list(network.blocks), list(network.vace_blocks)
    order = WanFamily().blocks(network)
    assert order == [main[0], vace[0], main[1], main[2], vace[1], main[3]]
    ran: list = []
    for block in order:
        block.register_forward_pre_hook(lambda module, args: ran.append(module))
    args = small_inputs()
    expected = run_ours(network, args, 0.8)
    assert ran == order
    placement = StreamedPlacement(network, "probe", order, blocks_on_device=2, prefetch=1)
    assert placement.resident_blocks == 0 and placement.streams
    counter = CopyCounter(monkeypatch)
    with torch.no_grad(), placement.use() as module:
        streamed = run_ours(module, args, 0.8)
    assert torch.equal(streamed, expected)
    assert counter.copies > 0 and counter.bytes_alive == 0


def test_text_keys_values_of_the_vace_blocks_are_cached_too():
    network = tiny_vace_network()
    projections = []
    network.vace_blocks[1].cross_attn.k.register_forward_hook(
        lambda *_: projections.append("vace k"))
    cache = CrossAttentionCache()
    for seed in range(3):
        args = small_inputs()
        args["x"] = torch.randn(args["x"].shape, generator=torch.Generator().manual_seed(seed))
        cached = run_ours(network, args, 1.0, cross_cache=cache)
        assert torch.equal(cached, run_ours(network, args, 1.0))
    assert cache.complete(WanFamily().blocks(network))
    assert projections == ["vace k"] * 4, "computed once for the cached runs, once per fresh one"


def test_compiled_block_stand_ins_cover_the_vace_blocks(monkeypatch):
    stub = StubCompiler()
    monkeypatch.setattr(speed_options, "BLOCK_COMPILER", BlockCompiler(stub))
    model = make_model(tiny_vace_network())
    args = small_inputs()
    inputs = ModelInputs(text=args["context"], vace_context=args["vace_context"], vace_strength=0.8)

    def one_step(model) -> torch.Tensor:
        run = RunInfo(sigmas=(0.7, 0.0))
        with torch.no_grad():
            v = model.run(run)(args["x"], 0.7, inputs)
        run.finish()
        return v

    plain = one_step(model)
    assert torch.equal(one_step(model.with_patch(SpeedOptions(compile_blocks=True))), plain)
    assert stub.calls == 6   # 4 main + 2 VACE blocks
    compiled = set(speed_options.BLOCK_COMPILER._per_block.keys())
    assert compiled == set(WanFamily().blocks(model.network))


# -- the sampler ------------------------------------------------------------------------------

class CallLog:
    """What the network was called with (latent batch, VACE context, strength), per call."""

    def __init__(self, network: WanDiT):
        self.calls: list[tuple[int, torch.Tensor | None, float | None]] = []
        network.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append((args[0].shape[0], kwargs.get("vace_context"),
                           kwargs.get("vace_strength")))


LATENT_FRAMES = 3


def vace_conditioning(reference_frames: int = 1, frames: int = LATENT_FRAMES,
                      strength: float = 0.7) -> VideoDiTConditioning:
    g = torch.Generator().manual_seed(9)
    context = torch.randn(1, VACE_IN, frames, 4, 4, generator=g)
    return VideoDiTConditioning(
        positive=torch.randn(1, 20, 32, generator=g), negative=torch.randn(1, 20, 32, generator=g),
        extras={VACE_KEY: VaceInputs(context, strength, reference_frames)})


def empty_latent(frames: int = LATENT_FRAMES) -> dict:
    return {"samples": torch.zeros(1, 16, frames, 4, 4)}


def settings(**changes) -> SamplingSettings:
    return SamplingSettings(**{**dict(seed=1, steps=3, cfg=3.0, shift=5.0, sampler="euler",
                                      batch_cfg=False), **changes})


def test_both_passes_get_the_context_and_the_reference_frames_are_cut():
    model = make_model(tiny_vace_network())
    log = CallLog(model.network)
    cond = vace_conditioning(reference_frames=1)
    context = cond.extras[VACE_KEY].context
    previews = []
    out = sample_video(model, cond, empty_latent(), settings(),
                       step_callback=lambda step, x0: previews.append(x0.shape[2]))["samples"]
    assert len(log.calls) == 2 * 3   # positive and negative pass, 3 steps
    assert previews == [LATENT_FRAMES - 1] * 3   # step previews show the clip only, too
    for batch, vace_context, strength in log.calls:
        assert batch == 1 and strength == 0.7 and torch.equal(vace_context, context)
    assert out.shape == (1, 16, LATENT_FRAMES - 1, 4, 4)

    uncut = sample_video(model, vace_conditioning(reference_frames=0), empty_latent(),
                         settings())["samples"]
    assert uncut.shape[2] == LATENT_FRAMES and torch.equal(out, uncut[:, :, 1:])

    log.calls.clear()
    stacked = sample_video(model, cond, empty_latent(), settings(batch_cfg=True))["samples"]
    assert len(log.calls) == 3
    for batch, vace_context, strength in log.calls:
        assert batch == 2 and torch.equal(vace_context, torch.cat([context, context]))
    torch.testing.assert_close(stacked, out, rtol=0, atol=1e-5)


def test_wrong_vace_combinations_are_refused_before_any_model_call():
    vace_model = make_model(tiny_vace_network())
    plain_model = make_model(WanDiT(WanDiTConfig(dim=64, ffn_dim=96, num_heads=2, num_layers=2,
                                                 text_dim=32, freq_dim=32)))
    logs = [CallLog(vace_model.network), CallLog(plain_model.network)]
    text_only = vace_conditioning().replace(extras={})

    with pytest.raises(InputError, match="VACE model and needs VACE conditioning") as error:
        sample_video(vace_model, text_only, empty_latent(), settings())
    assert "put VideoDiT VACE Conditioning between" in error.value.fix

    with pytest.raises(InputError, match="not a VACE model") as error:
        sample_video(plain_model, vace_conditioning(), empty_latent(), settings())
    assert error.value.input == "model" and "Wan VACE model" in error.value.fix

    with pytest.raises(InputError, match="covers 3 latent frames of 4x4, but the latent has 4"
                       ) as error:
        sample_video(vace_model, vace_conditioning(), empty_latent(frames=4), settings())
    assert error.value.input == "latent" and "VideoDiT VACE Conditioning" in error.value.fix

    with pytest.raises(InputError, match="leaving no video frame"):
        sample_video(vace_model, vace_conditioning(reference_frames=3), empty_latent(), settings())

    with pytest.raises(InputError, match="does not pair"):
        sample_video(vace_model, vace_conditioning(), empty_latent(), settings(),
                     model_low_noise=plain_model)

    image_cond = vace_conditioning().replace(extras={**vace_conditioning().extras,
                                                     FIRST_FRAMES_KEY: torch.zeros(1, 16, 1, 4, 4)})
    with pytest.raises(InputError, match="VACE model: it takes its images through VACE"):
        sample_video(vace_model, image_cond, empty_latent(), settings())

    flowedit = dict(seed=1, steps=3, source_cfg=1.0, target_cfg=1.0, shift=5.0, skip_steps=0,
                    refine_steps=0, n_avg=1)
    with pytest.raises(InputError, match="FlowEdit edits with a text-to-video model"):
        flowedit_video(vace_model, text_only, text_only, empty_latent(), **flowedit)
    with pytest.raises(InputError, match="FlowEdit does not take VACE") as error:
        flowedit_video(plain_model, text_only, vace_conditioning(), empty_latent(), **flowedit)
    assert error.value.input == "target_conditioning"
    assert all(not log.calls for log in logs)


def test_block_swap_on_a_vace_model_samples_the_same_latent(monkeypatch):
    model = make_model(tiny_vace_network(vace_layers=(0, 1), layers=2))
    cond, latent = vace_conditioning(), empty_latent()
    resident = sample_video(model, cond, latent, settings(steps=2))["samples"]
    counter = CopyCounter(monkeypatch)
    swapped = model.with_patch(BlockSwap(blocks_on_device=2, prefetch=1))
    assert torch.equal(sample_video(swapped, cond, latent, settings(steps=2))["samples"], resident)
    assert counter.copies > 0 and counter.bytes_alive == 0   # it streamed, and let go


def test_a_vace_block_is_an_ordinary_block_plus_its_projections():
    network = tiny_vace_network()
    first, second = network.vace_blocks
    assert isinstance(first, WanVaceBlock) and first.before_proj is not None
    assert second.before_proj is None
    own = {k.split(".", 2)[2] for k in network.state_dict() if k.startswith("vace_blocks.1.")}
    main = {k.split(".", 2)[2] for k in network.state_dict() if k.startswith("blocks.1.")}
    assert own == main | {"after_proj.weight", "after_proj.bias"}
    with pytest.raises(ValueError, match="vace_layers must rise from 0"):
        our_vace_config(vace_layers=(1, 2))
    with pytest.raises(ValueError, match="does not match the latent"):
        run_ours(network, {**small_inputs(), "vace_context": torch.zeros(1, VACE_IN, 2, 4, 4)},
                 1.0)
