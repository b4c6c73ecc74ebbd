"""Block swap against ComfyUI's real memory manager; run inside a ComfyUI checkout (cwd) with
ComfyUI's Python, prints one JSON object (``test_block_swap.py`` checks it).

As in ``comfyui_runtime_probe.py`` the models load onto ``cpu:0`` with a fixed budget standing
in for VRAM. ComfyUI treats every CPU device as "no VRAM management", so for the lowvram and
novram checks the probe tells it that ``cpu:0`` is a GPU and sets the VRAM state the way
``--lowvram`` / ``--novram`` would.
"""
from __future__ import annotations

import json
import os
import sys

import torch
from torch import nn

from comfyui_runtime_probe import import_pack

BLOCKS = 8


class Stack(nn.Module):
    """A network with a block loop, like a DiT: embed, blocks, head."""

    def __init__(self, width: int = 256, blocks: int = BLOCKS):
        super().__init__()
        self.embed = nn.Linear(64, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.head = nn.Linear(width, 64)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.head(x)


def main() -> None:
    repo_root = sys.argv[1]
    sys.path.insert(0, os.getcwd())
    from comfy.cli_args import args

    args.cpu = True
    import comfy.model_management as mm
    import comfy.model_patcher as model_patcher
    import folder_paths  # noqa: F401

    import_pack(repo_root)
    from comfyui_videodit.runtime import memory

    device = torch.device("cpu", 0)
    torch.manual_seed(0)
    network = Stack()
    probe = torch.randn(4, 64)
    with torch.no_grad():
        reference = network(probe)
    ours = memory.ManagedStreamedModel(network, "probe-stream", list(network.blocks),
                                       blocks_on_device=BLOCKS, prefetch=1, load_device=device,
                                       offload_device=torch.device("cpu"))
    size = mm.module_size(network)
    block = ours.block_sizes[0]
    native = model_patcher.ModelPatcher(nn.Linear(512, 512), load_device=device,
                                        offload_device=torch.device("cpu"))
    native_size = mm.module_size(native.model)
    budget = mm.minimum_inference_memory() + size + int(native_size * 0.6)

    def fake_free_memory(dev=None, torch_free_too=False):
        used = sum(lm.model_loaded_memory() for lm in mm.current_loaded_models if lm.device == dev)
        free = budget - used
        return (free, free) if torch_free_too else free

    mm.get_free_memory = fake_free_memory
    report = {"size": size, "block": block, "base": ours.base_bytes}

    def run() -> bool:
        with torch.no_grad(), ours.use() as module:
            return bool(torch.equal(module(probe), reference))

    report["first_equal"] = run()
    patcher = ours.comfyui_patcher
    report["registered"] = any(m is patcher for m in mm.loaded_models())
    report["loaded_first"] = patcher.loaded_size()
    mm.load_models_gpu([native])       # needs room: ComfyUI takes blocks from ours
    report["native_loaded"] = native.loaded_size()
    report["registered_after_native"] = any(m is patcher for m in mm.loaded_models())
    report["loaded_after_native"] = patcher.loaded_size()
    report["lowvram_flag_after_native"] = bool(patcher.model.model_lowvram)
    report["resident_after_native"] = ours.resident_blocks
    report["equal_while_partial"] = run()

    mm.free_memory(1e30, device)       # what unloading all models does for this device
    report["unload_all"] = [patcher.loaded_size(), any(m is patcher for m in mm.loaded_models())]

    # --lowvram: ComfyUI gives a partially loaded model what is free beyond the step's needs,
    # but never less than 128 MB, so this network is larger than that.
    torch.manual_seed(1)
    large = Stack(width=2048, blocks=12)
    with torch.no_grad():
        large_reference = large(probe)
    streamed = memory.ManagedStreamedModel(large, "probe-large", list(large.blocks),
                                           blocks_on_device=12, prefetch=1, load_device=device,
                                           offload_device=torch.device("cpu"))
    is_device_cpu = mm.is_device_cpu
    mm.is_device_cpu = lambda dev: is_device_cpu(dev) and dev.index is None
    budget = mm.minimum_inference_memory() + 128 * 1024 ** 2

    def run_large() -> bool:
        with torch.no_grad(), streamed.use() as module:
            return bool(torch.equal(module(probe), large_reference))

    for state in ("LOW_VRAM", "NO_VRAM"):
        mm.vram_state = getattr(mm.VRAMState, state)
        report[state] = {"equal": run_large(),
                         "loaded": streamed.comfyui_patcher.loaded_size(),
                         "resident": streamed.resident_blocks,
                         "size": mm.module_size(large), "base": streamed.base_bytes}
        mm.free_memory(1e30, device)
    print("PROBE-RESULT " + json.dumps(report))


if __name__ == "__main__":
    main()
