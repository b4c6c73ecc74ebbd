"""The memory plan: its numbers, its choice for block swap on auto, and refusing before any
allocation a run that cannot fit, naming the node, the input and what would fit."""
from __future__ import annotations

import logging

import pytest
import torch

from comfyui_videodit.core import streaming
from comfyui_videodit.core.host_memory import allocator_peak_bytes
from comfyui_videodit.core.latent_formats import WAN21
from comfyui_videodit.errors import InputError
from comfyui_videodit.families.memory_plan import (MemoryPlan, StepMemory, SwapSetting,
                                                    WeightLayout, decode_peak, plan_model)
from comfyui_videodit.families.wan_memory import wan_step_memory
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

GB = 1024 ** 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_step_estimate_matches_the_measured_cpu_peak(dtype):
    config = WanDiTConfig(dim=256, ffn_dim=1536, num_heads=2, num_layers=2, text_dim=64,
                          freq_dim=32)
    network = WanDiT(config).to(dtype).eval()
    x = torch.randn(1, 16, 5, 32, 32, dtype=dtype)
    t, text = torch.full((1,), 500.0), torch.randn(1, 512, 64, dtype=dtype)
    with torch.no_grad():
        network(x, t, text)
        measured = allocator_peak_bytes(lambda: network(x, t, text))
    estimate = wan_step_memory(config, tuple(x.shape), compute_dtype=dtype)
    assert abs(estimate.total / measured - 1) < 0.10, (estimate, measured)


def test_two_stacked_passes_double_the_token_activations():
    config = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
    one = wan_step_memory(config, (1, 16, 21, 60, 104), compute_dtype=torch.bfloat16)
    two = wan_step_memory(config, (1, 16, 21, 60, 104), compute_dtype=torch.bfloat16, passes=2)
    assert one.tokens == 21 * 30 * 52 == two.tokens
    assert 1.9 < two.total / one.total <= 2.0


LAYOUT = WeightLayout(base=1 * GB, blocks=(1 * GB,) * 10)
STEP = StepMemory(tokens=1000, persistent=1 * GB, block_peak=2 * GB, attention=1 * GB)


def test_auto_keeps_everything_when_it_fits_and_streams_the_rest_when_not():
    whole = plan_model("m", LAYOUT, STEP, swap=SwapSetting(0, 1), budget=20 * GB)
    assert whole.blocks_on_device == 10 and whole.peak == 14 * GB
    tight = plan_model("m", LAYOUT, STEP, swap=SwapSetting(0, 1), budget=9 * GB)
    # 9 GB - 3 GB activations - 1 GB base = 5 GB: 3 resident + 2 streaming blocks
    assert tight.blocks_on_device == 5 and tight.resident_bytes == 4 * GB
    assert tight.streaming_bytes == 2 * GB and tight.peak == 9 * GB
    least = plan_model("m", LAYOUT, STEP, swap=SwapSetting(0, 1), budget=int(5.5 * GB))
    assert (least.blocks_on_device, least.prefetch) == (1, 0)   # no room to copy ahead
    hopeless = plan_model("m", LAYOUT, STEP, swap=SwapSetting(0, 1), budget=4 * GB)
    assert hopeless.peak > 4 * GB
    fixed = plan_model("m", LAYOUT, STEP, swap=SwapSetting(4, 1), budget=100 * GB)
    assert fixed.blocks_on_device == 4 and fixed.resident_bytes == 3 * GB
    plain = plan_model("m", LAYOUT, STEP, swap=None, budget=9 * GB)
    assert plain.blocks_on_device == 10 and plain.peak == 14 * GB   # no patch: whole


def test_plan_line_says_what_was_chosen():
    plan = MemoryPlan("cuda:0", 9 * GB,
                      (plan_model("wan.safetensors", LAYOUT, STEP, swap=SwapSetting(0, 1),
                                  budget=9 * GB),),
                      decode=12 * GB, decode_tiled=2 * GB)
    line = plan.line()
    assert "\n" not in line and plan.fits and not plan.decode_fits
    assert "5 of 10 blocks on the device (3 resident + 2 streaming) [auto]" in line
    assert "fits" in line and "use tiled decode" in line


def test_decode_peak_grows_with_pixels_and_tiles_cap_it():
    full = decode_peak(WAN21, 720, 1280, 2)
    assert decode_peak(WAN21, 480, 832, 2) < full
    assert decode_peak(WAN21, 720, 1280, 2, tile=512) < full / 2
    assert decode_peak(WAN21, 720, 1280, 4) > full


# -- refusing in the nodes -----------------------------------------------------------------------
@pytest.fixture
def nodes(tiny_models_dir, monkeypatch):
    """The tiny pipeline, with the CPU treated as a separate device of a chosen size."""
    from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent
    from comfyui_videodit.nodes.loaders import VideoDiTModelLoader
    from comfyui_videodit.nodes.text import VideoDiTTextEncode, VideoDiTTextEncoderLoader
    from comfyui_videodit.nodes.vae import VideoDiTVAELoader
    from comfyui_videodit.runtime import devices, memory, model_folders

    monkeypatch.setattr(model_folders, "_models_dir_override", tiny_models_dir)
    encoder = VideoDiTTextEncoderLoader().load("tiny_umt5.safetensors", "fp32", "cpu")[0]

    class Pipeline:
        cond = VideoDiTTextEncode().encode(encoder, "a red ball rolls", "blurry")[0]
        vae = VideoDiTVAELoader().load("tiny_vae21.safetensors", "fp32")[0]
        latent = VideoDiTEmptyLatent().make(vae, 64, 64, 9, 1)[0]
        model = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]

        @staticmethod
        def device_of(size: int) -> None:
            monkeypatch.setattr(devices, "shares_host_memory", lambda device: False)
            monkeypatch.setattr(memory, "usable_bytes", lambda device: size)

    return Pipeline


def _sizes(model):
    layout = WeightLayout.of(model.network, model.family.blocks(model.network))
    step = model.family.step_memory(model.config, (1, 16, 3, 8, 8),
                                    compute_dtype=model.compute_dtype)
    return layout, step


@pytest.fixture
def nothing_runs(monkeypatch):
    """Fails the test if sampling starts or any weight is streamed."""
    from comfyui_videodit.samplers import denoise

    def forbidden(*args, **kwargs):
        raise AssertionError("allocated before refusing")

    monkeypatch.setattr(denoise, "sample_video", forbidden)
    monkeypatch.setattr(streaming.Transfer, "copy", forbidden)


def _sample(nodes, model):
    from comfyui_videodit.nodes.sampling import VideoDiTSampler

    return VideoDiTSampler().sample(model, nodes.cond, nodes.latent, 1, 2, 3.0, 5.0, "euler",
                                    1.0)[0]["samples"]


def test_a_step_that_cannot_fit_is_refused_naming_input_and_what_fits(nodes, nothing_runs):
    from comfyui_videodit.nodes.memory import VideoDiTBlockSwap

    from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent
    from comfyui_videodit.nodes.sampling import VideoDiTSampler

    latent = VideoDiTEmptyLatent().make(nodes.vae, 256, 256, 13, 1)[0]
    layout = WeightLayout.of(nodes.model.network, nodes.model.family.blocks(nodes.model.network))
    step = nodes.model.family.step_memory(nodes.model.config, tuple(latent["samples"].shape),
                                          compute_dtype=nodes.model.compute_dtype)
    nodes.device_of(layout.base + max(layout.blocks) + int(step.total * 0.7))
    swapped = VideoDiTBlockSwap().apply(nodes.model, 0, 1)[0]
    with pytest.raises(InputError) as caught:
        VideoDiTSampler().sample(swapped, nodes.cond, latent, 1, 2, 3.0, 5.0, "euler", 1.0)
    message = str(caught.value)
    assert message.startswith("VideoDiT Sampler · latent: tiny_t2v.safetensors needs")
    assert "frames or fewer at this size" in message and "or smaller at this length" in message


def test_a_model_too_big_to_load_whole_points_to_block_swap(nodes, nothing_runs):
    layout, step = _sizes(nodes.model)
    nodes.device_of(layout.base + int(1.5 * max(layout.blocks)) + step.total)
    with pytest.raises(InputError) as caught:
        _sample(nodes, nodes.model)
    assert str(caught.value).startswith("VideoDiT Sampler · model:")
    assert "add VideoDiT Block Swap" in str(caught.value)


def test_too_many_blocks_asked_for_names_the_block_swap_input(nodes, nothing_runs):
    from comfyui_videodit.nodes.memory import VideoDiTBlockSwap

    layout, step = _sizes(nodes.model)
    nodes.device_of(layout.base + int(1.5 * max(layout.blocks)) + step.total)
    swapped = VideoDiTBlockSwap().apply(nodes.model, 2, 0)[0]    # both blocks: too many
    with pytest.raises(InputError) as caught:
        _sample(nodes, swapped)
    assert str(caught.value).startswith("VideoDiT Block Swap · blocks_on_device:")
    assert "set it to 1 or less" in str(caught.value)


def test_auto_block_swap_runs_with_what_the_plan_chose(nodes, caplog):
    from comfyui_videodit.nodes.memory import VideoDiTBlockSwap

    layout, step = _sizes(nodes.model)
    expected = _sample(nodes, nodes.model)
    nodes.device_of(layout.base + max(layout.blocks) + step.total)
    swapped = VideoDiTBlockSwap().apply(nodes.model, 0, 1)[0]
    with caplog.at_level(logging.INFO, logger="comfyui_videodit"):
        got = _sample(nodes, swapped)
    assert torch.equal(got, expected)
    assert swapped.active_placement.blocks_on_device == 1
    assert any("1 of 2 blocks on the device (0 resident + 1 streaming) [auto]" in r.message
               for r in caplog.records)


def test_vae_decode_that_cannot_fit_asks_for_tiles(nodes):
    from comfyui_videodit.nodes.vae import VideoDiTVAEDecode

    latent = {"samples": torch.zeros(1, 16, 2, 64, 96)}       # 768x512
    vae_bytes = nodes.vae.managed.size_bytes
    nodes.device_of(vae_bytes + decode_peak(WAN21, 300, 300, 4, weights=False))
    with pytest.raises(InputError, match="VideoDiT VAE Decode · tiled: .*turn tiled on with "
                                         "tile_size 256 or smaller"):
        VideoDiTVAEDecode().decode(nodes.vae, latent)
    with pytest.raises(InputError, match="VideoDiT VAE Decode · tile_size: .*use tile_size 256"):
        VideoDiTVAEDecode().decode(nodes.vae, latent, True, 512, 64)


# -- text encoder and VAE: on the device for their call ------------------------------------------
def test_text_encoder_and_vae_go_back_after_their_call_unless_everything_fits(monkeypatch):
    from torch import nn

    from comfyui_videodit.runtime import devices, memory

    offloaded = []
    monkeypatch.setattr(memory.ManagedModel, "offload", lambda self: offloaded.append(self.name))
    monkeypatch.setattr(devices, "shares_host_memory", lambda device: False)
    monkeypatch.setattr(devices, "total_bytes", lambda device: 8 * GB)
    monkeypatch.setattr(devices, "reserved_bytes", lambda device: 0)
    monkeypatch.setattr(memory, "_last_plan_working_bytes", None)
    encoder = memory.for_the_call(nn.Linear(4, 4), "umT5")
    dit = memory.ManagedModel(nn.Linear(4, 4), "DiT")
    with encoder.use(offload_after=True):
        pass
    with dit.use():
        pass
    assert offloaded == ["umT5"]          # no plan yet: released; the DiT stays
    memory.note_plan(7 * GB)              # all the weights (tiny) and the step fit in 8 GB
    with encoder.use(offload_after=True):
        pass
    assert offloaded == ["umT5"]
    memory.note_plan(int(8.5 * GB))       # they do not: back after the call
    with encoder.use():
        pass
    assert offloaded == ["umT5", "umT5"]
