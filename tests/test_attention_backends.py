"""Attention kernels and compiled blocks: chosen per run, never a hard failure, never a change
to the shared network.

FlashAttention and SageAttention need CUDA; on this CPU they are unavailable, which is exactly
the fallback path: SDPA's result and one log line per run. "Available" is simulated by
replacing a kernel with a recording stand-in. Compiling is tested with a stand-in compiler:
a real ``torch.compile`` of even the tiny network takes 15-50 s on a 2-core CPU (set
VIDEODIT_TEST_COMPILE=1 to run that check too).
"""
from __future__ import annotations

import gc
import logging
import os

import pytest
import torch

from comfyui_videodit.core.conditioning import ModelInputs
from comfyui_videodit.core.latent_formats import WAN21
from comfyui_videodit.core.placement import Placement
from comfyui_videodit.core.run_info import RunInfo
from comfyui_videodit.families import speed_options
from comfyui_videodit.families.base import LoadedWeights
from comfyui_videodit.families.model import VideoModel
from comfyui_videodit.families.speed_options import BlockCompiler, SpeedOptions
from comfyui_videodit.families.wan import WanFamily
from comfyui_videodit.networks import attention
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

LOGGER = "comfyui_videodit"


def tiny_model(dtype: torch.dtype = torch.float32) -> VideoModel:
    config = WanDiTConfig(dim=128, ffn_dim=96, num_heads=2, num_layers=2, text_dim=32,
                          freq_dim=32)
    torch.manual_seed(0)
    network = WanDiT(config).eval().to(dtype)
    loaded = LoadedWeights(network, config, "wan-t2v-custom", WAN21, dtype, "tiny")
    return VideoModel.from_loaded(loaded, WanFamily(), Placement(network, "tiny"))


X = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(1))
INPUTS = ModelInputs(text=torch.randn(1, 512, 32, generator=torch.Generator().manual_seed(2)))


@torch.no_grad()
def two_steps(model: VideoModel, **options) -> list[torch.Tensor]:
    run = RunInfo(sigmas=(0.9, 0.5, 0.0), options=options)
    velocity = model.run(run)
    out = [velocity(X, 0.9, INPUTS), velocity(X, 0.5, INPUTS)]
    run.finish()
    return out


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING]


@pytest.fixture(autouse=True)
def no_environment_choice(monkeypatch):
    monkeypatch.delenv(attention.ENVIRONMENT_VARIABLE, raising=False)


@pytest.mark.parametrize("name", ["flash", "sage"])
def test_unavailable_kernel_falls_back_to_sdpa_with_one_line_per_run(name, caplog):
    model = tiny_model()
    expected = two_steps(model, attention="sdpa")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        got = two_steps(model, attention=name)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    lines = warnings_in(caplog)
    assert len(lines) == 1, lines  # two calls, one line
    assert name in lines[0] and "SDPA" in lines[0] and "CUDA" in lines[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        two_steps(model, attention=name)
    assert len(warnings_in(caplog)) == 1  # and again for the next run


def test_auto_and_sdpa_say_nothing_on_cpu(caplog):
    model = tiny_model()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        auto = two_steps(model)
        sdpa = two_steps(model, attention="sdpa")
    assert warnings_in(caplog) == []
    assert all(torch.equal(a, b) for a, b in zip(auto, sdpa))


def test_environment_variable_chooses_when_the_run_does_not(monkeypatch, caplog):
    model = tiny_model()
    monkeypatch.setenv(attention.ENVIRONMENT_VARIABLE, "sage")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        two_steps(model)                       # auto: the environment's sage, unavailable
        two_steps(model, attention="sdpa")     # a named choice wins over the environment
    lines = warnings_in(caplog)
    assert len(lines) == 1 and "sage" in lines[0]


def test_unknown_names_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="attention must be one of auto, sdpa, flash, sage"):
        SpeedOptions(attention="xformers")
    with pytest.raises(ValueError, match="one of auto, sdpa, flash, sage; got 'fast'"):
        two_steps(tiny_model(), attention="fast")
    monkeypatch.setenv(attention.ENVIRONMENT_VARIABLE, "flash3")
    with pytest.raises(ValueError, match="VIDEODIT_ATTENTION must be one of"):
        two_steps(tiny_model())


def test_an_available_kernel_is_used(monkeypatch):
    calls = []

    def recording(q, k, v):
        calls.append(q.shape)
        return attention.sdpa(q, k, v)

    monkeypatch.setitem(attention._KERNELS, "flash", attention._Kernel(recording, None, ()))
    model = tiny_model()
    expected = two_steps(model, attention="sdpa")
    got = two_steps(model)  # auto prefers an exact fast kernel when it can run
    assert calls, "auto did not pick the available kernel"
    assert len(calls) == 2 * 2 * 2  # 2 calls x 2 blocks x (self + cross)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_choose_reports_why_not():
    cpu = torch.device("cpu")
    assert attention.choose("auto", cpu, torch.float32, 64).name == "sdpa"
    choice = attention.choose("flash", cpu, torch.bfloat16, 128)
    assert choice.name == "sdpa" and "CUDA" in choice.fallback_reason
    assert "fp16 or bf16" in attention.unavailable_reason("sage", torch.device("cuda"),
                                                          torch.float32, 128)


# -- compiled blocks -------------------------------------------------------------------------

class StubCompiler:
    """Stands in for torch.compile: returns the function wrapped, counting calls."""

    def __init__(self):
        self.compiled = 0
        self.calls = 0

    def __call__(self, function):
        self.compiled += 1

        def run(*args):
            self.calls += 1
            return function(*args)
        return run


def test_compile_is_off_by_default():
    assert SpeedOptions().compile_blocks is False
    run = RunInfo()
    SpeedOptions().wrap_velocity(lambda *a: None, None, run)
    assert run.options == {"attention": "auto", "compile": False}
    arguments = speed_options.forward_options(RunInfo(), [], torch.device("cpu"),
                                              torch.float32, 64)
    assert "block_calls" not in arguments


def test_compiled_blocks_run_outside_the_shared_network(monkeypatch):
    stub = StubCompiler()
    monkeypatch.setattr(speed_options, "BLOCK_COMPILER", BlockCompiler(stub))
    model = tiny_model()
    blocks = list(model.network.blocks)
    before = [dict(vars(block)) for block in blocks]
    keys = list(model.network.state_dict())
    plain = two_steps(model)
    compiled = two_steps(model.with_patch(SpeedOptions(compile_blocks=True)))
    assert all(torch.equal(a, b) for a, b in zip(compiled, plain))
    assert stub.compiled == 1 and stub.calls == 2 * 2   # one compilation, 2 calls x 2 blocks
    # the network is untouched: same modules, attributes and state dict
    assert list(model.network.blocks) == blocks
    assert [dict(vars(block)) for block in blocks] == before
    assert list(model.network.state_dict()) == keys
    # the stand-ins are cached per block and hold their block weakly
    cache = speed_options.BLOCK_COMPILER._per_block
    assert set(cache.keys()) == set(blocks)
    two_steps(model.with_patch(SpeedOptions(compile_blocks=True)))
    assert stub.compiled == 1
    del model, blocks, before
    gc.collect()
    assert len(cache) == 0


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VIDEODIT_TEST_COMPILE"),
                    reason="a real torch.compile takes 15-50 s here; set VIDEODIT_TEST_COMPILE=1")
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_torch_compile_of_the_blocks_matches_eager(monkeypatch, dtype, tolerance):
    monkeypatch.setattr(speed_options, "BLOCK_COMPILER", BlockCompiler())
    model = tiny_model(dtype)
    plain = two_steps(model)
    compiled = two_steps(model.with_patch(SpeedOptions(compile_blocks=True)))
    for a, b in zip(compiled, plain):
        assert (a - b).abs().max() <= tolerance * b.abs().max()


def test_the_node_offers_every_kernel_and_leaves_its_input_alone():
    from comfyui_videodit.errors import InputError
    from comfyui_videodit.nodes.speed import ATTENTION_CHOICES, VideoDiTSpeedOptions

    assert ATTENTION_CHOICES == attention.BACKENDS
    spec = VideoDiTSpeedOptions.INPUT_TYPES()["required"]
    assert list(spec) == ["model", "attention", "compile_blocks"]
    assert spec["attention"][1]["default"] == "auto"
    assert spec["compile_blocks"][1]["default"] is False
    model = tiny_model()
    (patched,) = VideoDiTSpeedOptions().apply(model, "sdpa", True)
    assert patched is not model and model.patches == ()
    assert isinstance(patched.patches[-1], SpeedOptions)
    assert patched.patches[-1].attention == "sdpa" and patched.patches[-1].compile_blocks
    with pytest.raises(InputError, match="VideoDiT Speed Options · attention: unknown"):
        VideoDiTSpeedOptions().apply(model, "xformers", False)


# -- the bf16 CPU forward ------------------------------------------------------------------------

@torch.no_grad()
def test_fused_cpu_linear_leaves_hooked_layers_to_their_module():
    """bf16 linears on the CPU run through oneDNN's fused op, which bypasses the module call;
    a layer with a forward hook (how a LoRA reaches fp8 layers) must still run its hook."""
    from comfyui_videodit.networks import wan_dit

    layer = torch.nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    plain = wan_dit.project(layer, x)
    assert (plain.float() - torch.nn.functional.linear(x.float(), layer.weight.float(),
                                                       layer.bias.float())).abs().max() < 0.1
    seen = []
    handle = layer.register_forward_hook(lambda module, args, out: seen.append(1) or out + 1)
    hooked = wan_dit.project(layer, x)
    handle.remove()
    assert seen == [1] and torch.equal(hooked, layer(x) + 1)
    gelu = wan_dit.project(layer, x, gelu=True)
    exact = torch.nn.functional.gelu(torch.nn.functional.linear(
        x.float(), layer.weight.float(), layer.bias.float()), approximate="tanh")
    assert (gelu.float() - exact).abs().max() <= (exact.abs().max() * 2 ** -7)


def test_streamed_blocks_are_not_compiled(monkeypatch, caplog):
    """Block swap moves weights in block hooks, which a compiled graph must not trace."""
    from comfyui_videodit.families.block_swap import BlockSwap

    stub = StubCompiler()
    monkeypatch.setattr(speed_options, "BLOCK_COMPILER", BlockCompiler(stub))
    model = tiny_model()
    plain = two_steps(model)
    swapped = model.with_patch(BlockSwap(1, 0)).with_patch(SpeedOptions(compile_blocks=True))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        streamed = two_steps(swapped)
    assert stub.compiled == 0
    assert all(torch.equal(a, b) for a, b in zip(streamed, plain))
    assert caplog.text.count("compiled blocks are off") == 1
