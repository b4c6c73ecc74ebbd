"""Run inside a ComfyUI checkout (cwd) with ComfyUI's Python; prints one JSON object.

Imports ComfyUI's own modules (CPU mode, no server) and this pack the way ComfyUI does (by file
path), then exercises the runtime against the real memory manager, progress hook, interrupt
flag and preview code. ``test_comfyui_integration.py`` runs it and checks the results.

To watch eviction on a CPU-only machine the models load onto ``cpu:0``: ComfyUI manages memory
for every load device except plain ``cpu``, and its free-memory query is replaced by a fixed
budget minus what the loaded models occupy.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import torch
from torch import nn


def import_pack(repo_root: str):
    spec = importlib.util.spec_from_file_location(
        "comfyui_videodit", os.path.join(repo_root, "__init__.py"),
        submodule_search_locations=[repo_root])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_videodit"] = pack
    spec.loader.exec_module(pack)
    return pack


def memory_sharing(mm, model_patcher, memory) -> dict:
    device = torch.device("cpu", 0)
    size = mm.module_size(nn.Linear(512, 512))
    budget = mm.minimum_inference_memory() + int(size * 1.6)  # room for one model, not two

    def fake_free_memory(dev=None, torch_free_too=False):
        used = sum(lm.model_loaded_memory() for lm in mm.current_loaded_models if lm.device == dev)
        free = budget - used
        return (free, free) if torch_free_too else free

    mm.get_free_memory = fake_free_memory
    torch.manual_seed(0)
    native = model_patcher.ModelPatcher(nn.Linear(512, 512), load_device=device,
                                        offload_device=torch.device("cpu"))
    ours = memory.ManagedModel(nn.Linear(512, 512), "probe-linear", load_device=device,
                               offload_device=torch.device("cpu"))
    probe = torch.randn(2, 512)
    reference = ours.module(probe)
    result = {"size": size}

    mm.load_models_gpu([native])
    result["native_loaded_first"] = native.loaded_size()
    with ours.use() as module:
        result["ours_registered"] = any(m is ours.comfyui_patcher for m in mm.loaded_models())
        result["ours_loaded"] = ours.comfyui_patcher.loaded_size()
        result["native_after_ours"] = native.loaded_size()  # ComfyUI made room for ours
        result["network_untouched"] = not hasattr(module, "model_loaded_weight_memory")
    mm.load_models_gpu([native])  # ComfyUI's model comes back and pushes ours out
    result["native_reloaded"] = native.loaded_size()
    result["ours_after_native"] = ours.comfyui_patcher.loaded_size()
    with ours.use() as module:  # our next use loads it whole again
        result["ours_reloaded"] = ours.comfyui_patcher.loaded_size()
        result["output_unchanged"] = bool(torch.equal(module(probe), reference))

    other = memory.ManagedModel(nn.Linear(512, 512), "probe-second", load_device=device,
                                offload_device=torch.device("cpu"))
    with ours.use():
        with other.use():  # ours is in use: ComfyUI must not push it out for the second one
            result["nested_both_loaded"] = [ours.comfyui_patcher.loaded_size(),
                                            other.comfyui_patcher.loaded_size()]
    with other.use(offload_after=True):
        pass
    result["offload_after_unregisters"] = not any(
        m is other.comfyui_patcher for m in mm.loaded_models())
    mm.free_memory(1e30, device)  # what unload_all_models does for the compute device
    result["unload_all"] = [ours.comfyui_patcher.loaded_size(),
                            any(m is ours.comfyui_patcher for m in mm.loaded_models())]
    with ours.use() as module:
        result["after_unload_all"] = [ours.comfyui_patcher.loaded_size(),
                                      bool(torch.equal(module(probe), reference))]
    return result


def progress_and_interrupt(mm, comfy_utils, progress) -> dict:
    from comfy.cli_args import LatentPreviewMethod, args
    from comfy_execution.utils import CurrentNodeContext
    from PIL import Image

    events = []

    def hook(value, total, preview, prompt_id=None, node_id=None):
        events.append([value, total, node_id, None if preview is None
                       else [preview[0], list(preview[1].size), preview[2]]])

    comfy_utils.set_progress_bar_global_hook(hook)
    with CurrentNodeContext("prompt-1", "42"):
        bar = progress.Progress(3, "probe")
        args.preview_method = LatentPreviewMethod.NoPreviews
        bar.update(1, preview=Image.new("RGB", (6, 4)))  # previews off: not sent
        args.preview_method = LatentPreviewMethod.Latent2RGB
        bar.update(1, preview=Image.new("RGB", (6, 4)))
    result = {"events": events}
    mm.interrupt_current_processing(True)
    try:
        progress.check_interrupt()
        result["interrupt"] = "not raised"
    except mm.InterruptProcessingException:
        result["interrupt"] = "InterruptProcessingException"
    result["interrupt_flag_after"] = mm.processing_interrupted()
    return result


def preview_parity(previews) -> dict:
    import numpy as np
    import comfy.latent_formats as latent_formats
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod, args

    result = {}
    args.preview_method = LatentPreviewMethod.NoPreviews
    result["enabled_with_none"] = previews.previews_enabled()
    args.preview_method = LatentPreviewMethod.Auto
    result["enabled_with_auto"] = previews.previews_enabled()
    generator = torch.Generator().manual_seed(1)
    for name, fmt in (("wan21", latent_formats.Wan21()), ("wan22", latent_formats.Wan22())):
        x0 = torch.randn(1, fmt.latent_channels, 3, 24, 40, generator=generator)
        theirs = latent_preview.Latent2RGBPreviewer(
            fmt.latent_rgb_factors, fmt.latent_rgb_factors_bias).decode_latent_to_preview(x0)
        ours = previews.latent_preview(x0, name)
        a, b = np.asarray(theirs).astype(int), np.asarray(ours).astype(int)
        result[name] = {"shape": [list(a.shape), list(b.shape)],
                        "max_diff": int(np.abs(a - b).max()),
                        "equal_fraction": float((a == b).mean())}
    return result


def main() -> None:
    repo_root = sys.argv[1]
    sys.path.insert(0, os.getcwd())
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management initialises devices
    import comfy.model_management as mm
    import comfy.model_patcher as model_patcher
    import comfy.utils as comfy_utils
    import folder_paths  # noqa: F401  (its presence is how the pack knows it is inside ComfyUI)

    import_pack(repo_root)
    from comfyui_videodit.runtime import host, memory, previews, progress

    report = {"inside_comfyui": host.inside_comfyui()}
    report["memory"] = memory_sharing(mm, model_patcher, memory)
    report["progress"] = progress_and_interrupt(mm, comfy_utils, progress)
    report["previews"] = preview_parity(previews)
    print("PROBE-RESULT " + json.dumps(report))


if __name__ == "__main__":
    main()
