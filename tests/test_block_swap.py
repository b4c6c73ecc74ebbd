"""Block swap streams the transformer blocks that do not fit and changes no number.

The compute device here is the CPU, so "on the device" is counted, not observed: every copy a
streamed block gets goes through ``Transfer.copy``, and the copies alive are counted (by weak
references) at the end of every block, when the most are alive. Blocks that stay resident
count always. The count must never exceed ``blocks_on_device``, and the streamed result must
equal the resident one bit for bit.
"""
from __future__ import annotations

import weakref

import pytest
import torch
from safetensors.torch import save_file

from comfyui_videodit.core import streaming
from comfyui_videodit.core.placement import Placement
from comfyui_videodit.core.streamed_placement import StreamedPlacement
from comfyui_videodit.families.block_swap import BlockSwap
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig
from comfyui_videodit.nodes.loaders import VideoDiTModelLoader
from comfyui_videodit.nodes.lora import VideoDiTLoraLoader
from comfyui_videodit.nodes.memory import VideoDiTBlockSwap


class CopyCounter:
    """Counts the streamed copies alive, by wrapping the one function that makes them."""

    def __init__(self, monkeypatch):
        self.alive: dict[int, int] = {}
        self.copies = 0
        self.dtypes: set[torch.dtype] = set()
        original = streaming.Transfer.copy
        counter = self

        def counted(transfer, tensor):
            out = original(transfer, tensor)
            key = id(out)
            counter.alive[key] = out.numel() * out.element_size()
            counter.copies += 1
            counter.dtypes.add(out.dtype)
            weakref.finalize(out, counter.alive.pop, key, None)
            return out

        monkeypatch.setattr(streaming.Transfer, "copy", counted)

    @property
    def bytes_alive(self) -> int:
        return sum(self.alive.values())


class ResidencyProbe:
    """At the end of every block: blocks whose weights are on the device (resident ones plus
    streamed copies alive, counted in whole blocks)."""

    def __init__(self, counter: CopyCounter, blocks, resident: int):
        self.counter = counter
        self.block_bytes = sum(t.numel() * t.element_size() for t in
                               list(blocks[-1].parameters()) + list(blocks[-1].buffers()))
        self.resident = resident
        self.most = 0
        self.handles = [b.register_forward_hook(self._count) for b in blocks]

    def _count(self, module, args, output):
        streamed = self.counter.bytes_alive / self.block_bytes
        assert streamed == int(streamed), "a block was partly copied"
        self.most = max(self.most, self.resident + int(streamed))

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _network(layers: int = 6, *, fp8: bool = False, dtype=torch.float32, seed: int = 0):
    config = WanDiTConfig(dim=64, ffn_dim=96, num_heads=2, num_layers=layers, text_dim=32,
                          freq_dim=32, fp8_linears=fp8)
    torch.manual_seed(seed)
    network = WanDiT(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in network.named_parameters():
            values = torch.randn(p.shape, generator=generator) * 0.1
            p.data = values.to(p.dtype if p.dtype.itemsize == 1 else dtype)
    return network.eval()


def _inputs(dtype, batch: int = 1):
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(batch, 16, 3, 8, 8, generator=generator).to(dtype)
    text = torch.randn(batch, 20, 32, generator=generator).to(dtype)
    return x, torch.full((batch,), 700.0), text


@pytest.mark.parametrize("kind", ["fp32", "bf16", "fp8"])
@pytest.mark.parametrize("blocks_on_device,prefetch,resident", [(1, 1, 0), (2, 1, 0), (4, 1, 2),
                                                                 (3, 0, 2), (5, 2, 2)])
def test_streamed_forward_equals_resident_bit_for_bit(monkeypatch, kind, blocks_on_device,
                                                       prefetch, resident):
    dtype = torch.float32 if kind == "fp32" else torch.bfloat16
    network = _network(fp8=kind == "fp8", dtype=dtype)
    x, t, text = _inputs(dtype)
    with torch.no_grad():
        expected = network(x, t, text)
    placement = StreamedPlacement(network, "probe", list(network.blocks),
                                  blocks_on_device=blocks_on_device, prefetch=prefetch)
    assert placement.resident_blocks == resident and placement.streams
    counter = CopyCounter(monkeypatch)
    probe = ResidencyProbe(counter, list(network.blocks), resident)
    with torch.no_grad(), placement.use() as module:
        got = module(x, t, text)
    probe.remove()
    assert torch.equal(got, expected)
    assert probe.most == blocks_on_device          # never above the setting, and used fully
    assert counter.copies > 0 and counter.bytes_alive == 0   # every copy dropped after use
    if kind == "fp8":
        assert torch.float8_e4m3fn in counter.dtypes   # fp8 weights travel as fp8
    # the hooks are gone: the network runs resident again afterwards
    assert not network._forward_pre_hooks and not any(b._forward_hooks for b in network.blocks)
    with torch.no_grad():
        assert torch.equal(network(x, t, text), expected)


def test_all_blocks_on_the_device_streams_nothing(monkeypatch):
    network = _network(layers=3)
    counter = CopyCounter(monkeypatch)
    placement = StreamedPlacement(network, "probe", list(network.blocks), blocks_on_device=3)
    x, t, text = _inputs(torch.float32)
    with torch.no_grad(), placement.use() as module:
        module(x, t, text)
    assert not placement.streams and counter.copies == 0


def test_a_block_run_out_of_order_is_fetched_on_the_spot(monkeypatch):
    network = _network(layers=4)
    x, t, text = _inputs(torch.float32)
    placement = StreamedPlacement(network, "probe", list(network.blocks), blocks_on_device=2,
                                  prefetch=1)
    with torch.no_grad():
        expected = network(x, t, text)
        network.blocks = torch.nn.ModuleList(reversed(list(network.blocks)))  # runs 3, 2, 1, 0
        reversed_resident = network(x, t, text)
        with placement.use() as module:
            got = module(x, t, text)
    assert torch.equal(got, reversed_resident) and not torch.equal(got, expected)


def test_host_budget_lowers_resident_blocks_and_keeps_the_numbers(monkeypatch):
    network = _network(layers=6)
    x, t, text = _inputs(torch.float32)
    with torch.no_grad():
        expected = network(x, t, text)
    placement = StreamedPlacement(network, "probe", list(network.blocks), blocks_on_device=6)
    block = placement.block_sizes[0]
    loaded = placement.fit(placement.base_bytes + 2.5 * block)   # what ComfyUI may do
    assert placement.resident_blocks == 2 and loaded == placement.base_bytes + 2 * block
    assert placement.streams                    # the four others now stream
    counter = CopyCounter(monkeypatch)
    probe = ResidencyProbe(counter, list(network.blocks), 2)
    with torch.no_grad(), placement.use() as module:
        assert torch.equal(module(x, t, text), expected)
    probe.remove()
    assert probe.most <= 6
    assert placement.fit(0) == placement.base_bytes and placement.resident_blocks == 0


# -- through the nodes ---------------------------------------------------------------------------
def _write_dit(folder, name, layers, seed):
    config = WanDiTConfig(dim=256, ffn_dim=64, num_heads=2, num_layers=layers, text_dim=32,
                          freq_dim=32)
    network = WanDiT(config)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in network.state_dict().items():
        value = torch.randn(value.shape, generator=generator) * 0.05
        if key.endswith(("norm_q.weight", "norm_k.weight", "norm3.weight")):
            value = value + 1.0
        state[f"model.diffusion_model.{key}"] = value.contiguous()
    save_file(state, str(folder / name))


@pytest.fixture(scope="module")
def deep_models(tiny_models_dir):
    folder = tiny_models_dir / "diffusion_models"
    _write_dit(folder, "deep_high.safetensors", 5, 11)
    _write_dit(folder, "deep_low.safetensors", 5, 12)
    return tiny_models_dir


@pytest.fixture
def graph(deep_models, tiny_sampling_graph):
    return tiny_sampling_graph(deep_models, 4)


def _load(name):
    return VideoDiTModelLoader().load(name, "fp32")[0]


def test_text_to_video_with_block_swap_equals_without(graph, monkeypatch):
    base = _load("deep_high.safetensors")
    alone = graph(base)
    swapped = VideoDiTBlockSwap().apply(base, 2, 1)[0]
    counter = CopyCounter(monkeypatch)
    probe = ResidencyProbe(counter, base.family.blocks(base.network), 0)
    assert torch.equal(graph(swapped), alone)
    probe.remove()
    assert probe.most == 2 and counter.copies > 0


def test_a14b_expert_switch_with_block_swap_on_both_experts(graph, monkeypatch):
    high, low = _load("deep_high.safetensors"), _load("deep_low.safetensors")
    expected = graph(high, low)
    high_swap = VideoDiTBlockSwap().apply(high, 3, 1)[0]
    low_swap = VideoDiTBlockSwap().apply(low, 1, 1)[0]   # prefetch needs a second slot: none
    counter = CopyCounter(monkeypatch)
    probes = [ResidencyProbe(counter, m.family.blocks(m.network), r)
              for m, r in ((high, 1), (low, 0))]
    assert torch.equal(graph(high_swap, low_swap), expected)
    for probe in probes:
        probe.remove()
    assert [p.most for p in probes] == [3, 1]


@pytest.mark.parametrize("swapped_first", [False, True])
def test_two_branches_from_one_loader_stay_apart(graph, swapped_first):
    base = _load("deep_high.safetensors")
    originals = {k: v.clone() for k, v in base.network.state_dict().items()}
    alone = graph(base)
    swapped = VideoDiTBlockSwap().apply(base, 2, 1)[0]
    assert base.patches == () and swapped.shares_weights_with(base)
    order = [swapped, base] if swapped_first else [base, swapped]
    outputs = {id(m): graph(m) for m in order}
    assert torch.equal(outputs[id(base)], alone) and torch.equal(outputs[id(swapped)], alone)
    assert isinstance(swapped.active_placement, StreamedPlacement)
    assert not isinstance(base.active_placement, StreamedPlacement)
    network = base.network
    assert not network._forward_pre_hooks and not any(b._forward_pre_hooks for b in network.blocks)
    assert all(torch.equal(v, originals[k]) for k, v in network.state_dict().items())


def test_lora_with_block_swap_equals_lora_without(graph, tiny_models_dir, monkeypatch):
    from comfyui_videodit.runtime import model_folders

    monkeypatch.setattr(model_folders, "_models_dir_override", tiny_models_dir)
    base = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    with_lora = VideoDiTLoraLoader().load(base, "tiny_t2v_lora.safetensors", 0.8)[0]
    expected = graph(with_lora)
    for model in (VideoDiTBlockSwap().apply(with_lora, 1, 1)[0],       # LoRA, then block swap
                  VideoDiTLoraLoader().load(VideoDiTBlockSwap().apply(base, 1, 0)[0],
                                            "tiny_t2v_lora.safetensors", 0.8)[0]):
        assert torch.equal(graph(model), expected)
    assert not torch.equal(graph(base), expected)


def test_patch_is_immutable_and_shared_placement_is_reused():
    network = _network(layers=3)
    from comfyui_videodit.families.base import LoadedWeights
    from comfyui_videodit.families.model import VideoModel
    from comfyui_videodit.families.wan import WanFamily
    from comfyui_videodit.core.latent_formats import WAN21

    loaded = LoadedWeights(network, network.config, "probe", WAN21, torch.float32, "probe")
    model = VideoModel.from_loaded(loaded, WanFamily(), Placement(network, "probe"))
    patch = BlockSwap(2, 1)
    first, second = model.with_patch(patch), model.clone().with_patch(patch)
    assert first.active_placement is second.active_placement   # one placement per network
    assert model.active_placement is model.placement
    assert "2 blocks" in patch.describe()
    with pytest.raises(ValueError):
        BlockSwap(-1, 1)


def test_block_swap_node_contract_and_errors(tiny_models_dir, monkeypatch):
    from comfyui_videodit.errors import InputError
    from comfyui_videodit.runtime import model_folders

    spec = VideoDiTBlockSwap.INPUT_TYPES()["required"]
    assert list(spec) == ["model", "blocks_on_device", "prefetch"]
    assert spec["blocks_on_device"][1]["default"] == 0 and spec["prefetch"][1]["default"] == 1
    monkeypatch.setattr(model_folders, "_models_dir_override", tiny_models_dir)
    base = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    monkeypatch.setattr(type(base.family), "blocks", lambda self, network: [])
    with pytest.raises(InputError, match="VideoDiT Block Swap · model"):
        VideoDiTBlockSwap().apply(base, 0, 1)


# -- inside a real ComfyUI (opt-in) --------------------------------------------------------------
@pytest.mark.comfyui
def test_comfyui_counts_streamed_weights_and_evicts_them_partially():
    """The streamed model registers with ComfyUI's memory manager; loading another model takes
    blocks from it instead of unloading it; --lowvram / --novram budgets stream more blocks;
    the output never changes."""
    import json
    import subprocess
    from pathlib import Path

    from comfyui_server import COMFYUI_DIR, COMFYUI_PYTHON, comfyui_env, require_comfyui

    require_comfyui()
    done = subprocess.run(
        [COMFYUI_PYTHON, str(Path(__file__).with_name("comfyui_block_swap_probe.py")),
         str(Path(__file__).resolve().parent.parent)],
        cwd=COMFYUI_DIR, capture_output=True, text=True, timeout=300, env=comfyui_env())
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE-RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(lines[-1][len("PROBE-RESULT "):])
    size, block = report["size"], report["block"]
    assert report["registered"] and report["loaded_first"] == size and report["first_equal"]
    assert report["native_loaded"] > 0
    assert report["registered_after_native"], "the second load unloaded ours wholly"
    assert report["base"] < report["loaded_after_native"] < size
    assert (size - report["loaded_after_native"]) % block == 0   # whole blocks went
    assert report["lowvram_flag_after_native"] and report["equal_while_partial"]
    assert report["unload_all"] == [0, False]
    lowvram, novram = report["LOW_VRAM"], report["NO_VRAM"]
    assert lowvram["equal"] and 0 < lowvram["resident"] < 12
    assert lowvram["loaded"] <= 128 * 1024 ** 2 < lowvram["size"]
    assert novram["equal"] and novram["resident"] == 0 and novram["loaded"] == novram["base"]
