"""The runtime's ComfyUI paths, against a small stand-in for ComfyUI's modules.

The stand-in records what our code asks of ComfyUI (which models are loaded together, which
progress values and previews are sent, which node they belong to). What ComfyUI then does with
those requests is checked against the real ComfyUI in ``test_comfyui_integration.py``.
"""
from __future__ import annotations

import enum
import sys
import types
from typing import NamedTuple

import pytest
import torch
from torch import nn

from comfyui_videodit.runtime import devices, host, memory, previews, progress


class _PreviewMethod(enum.Enum):  # the shape of comfy.cli_args.LatentPreviewMethod
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"


class _ExecutionContext(NamedTuple):
    prompt_id: str
    node_id: str
    list_index: int | None


class FakeComfyUI:
    """Just enough of ``comfy.*``, ``comfy_execution.utils`` and ``folder_paths``."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.bars: list[FakeComfyUI.Bar] = []
        self.interrupt = False
        self.context: _ExecutionContext | None = None
        fake = self

        class InterruptProcessingException(Exception):
            pass

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0):
                self.model, self.load_device, self.offload_device = model, load_device, offload_device
                if not hasattr(model, "device"):
                    model.device = offload_device

        class LoadedModel:
            def __init__(self, patcher):
                self.model = patcher

            def model_unload(self, memory_to_free=None, unpatch_weights=True):
                fake.calls.append(("model_unload", self.model.model.videodit_name))
                self.model.model.to(self.model.offload_device)
                return True

        self.InterruptProcessingException = InterruptProcessingException
        self.LoadedModel = LoadedModel
        mm = types.ModuleType("comfy.model_management")
        mm.current_loaded_models = []
        mm.get_torch_device = lambda: torch.device("cpu")
        mm.unet_offload_device = lambda: torch.device("cpu")
        mm.InterruptProcessingException = InterruptProcessingException

        def load_models_gpu(models, memory_required=0, force_patch_weights=False,
                            minimum_memory_required=None, force_full_load=False):
            fake.calls.append(("load_models_gpu", [m.model.videodit_name for m in models],
                               force_full_load))
            for patcher in models:
                if not any(lm.model is patcher for lm in mm.current_loaded_models):
                    patcher.model.to(patcher.load_device)
                    mm.current_loaded_models.insert(0, LoadedModel(patcher))

        def free_memory(memory_required, device, keep_loaded=()):
            fake.calls.append(("free_memory", memory_required, device))

        def throw_exception_if_processing_interrupted():
            if fake.interrupt:
                fake.interrupt = False
                raise InterruptProcessingException()

        mm.load_models_gpu = load_models_gpu
        mm.free_memory = free_memory
        mm.soft_empty_cache = lambda force=False: None
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted

        patcher_module = types.ModuleType("comfy.model_patcher")
        patcher_module.ModelPatcher = ModelPatcher

        class Bar:
            def __init__(self, total, node_id=None):
                self.total, self.node_id, self.updates = total, node_id, []
                fake.bars.append(self)

            def update_absolute(self, value, total=None, preview=None):
                self.updates.append((value, total, preview))

        self.Bar = Bar
        utils = types.ModuleType("comfy.utils")
        utils.ProgressBar = Bar

        cli_args = types.ModuleType("comfy.cli_args")
        cli_args.args = types.SimpleNamespace(preview_method=_PreviewMethod.NoPreviews, preview_size=384)
        cli_args.LatentPreviewMethod = _PreviewMethod
        self.args = cli_args.args

        execution_utils = types.ModuleType("comfy_execution.utils")
        execution_utils.get_executing_context = lambda: fake.context

        comfy = types.ModuleType("comfy")
        comfy.__path__ = []
        comfy_execution = types.ModuleType("comfy_execution")
        comfy_execution.__path__ = []
        self.mm = mm
        self.modules = {
            "comfy": comfy, "comfy.model_management": mm, "comfy.model_patcher": patcher_module,
            "comfy.utils": utils, "comfy.cli_args": cli_args, "comfy_execution": comfy_execution,
            "comfy_execution.utils": execution_utils, "folder_paths": types.ModuleType("folder_paths"),
        }

    def loaded_names(self) -> list[str]:
        return [lm.model.model.videodit_name for lm in self.mm.current_loaded_models]


@pytest.fixture
def comfy(monkeypatch):
    fake = FakeComfyUI()
    for name, module in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delenv("VIDEODIT_STANDALONE", raising=False)
    assert host.inside_comfyui()
    yield fake


def _tiny(name: str) -> memory.ManagedModel:
    return memory.ManagedModel(nn.Linear(4, 4), name)


def test_devices_come_from_comfyui(comfy, monkeypatch):
    comfy.mm.get_torch_device = lambda: torch.device("cuda", 1)
    comfy.mm.unet_offload_device = lambda: torch.device("cpu")
    monkeypatch.setenv(devices.DEVICE_ENV, "mps")  # ignored inside ComfyUI
    assert devices.compute_device() == torch.device("cuda", 1)
    devices.free_memory(123, torch.device("cuda", 1))
    assert comfy.calls == [("free_memory", 123, torch.device("cuda", 1))]


def test_load_goes_through_comfyui_memory_manager(comfy):
    dit = _tiny("dit")
    with dit.use() as module:
        assert module is dit.module
        # the network itself is registered, whole, and untouched by ComfyUI's bookkeeping
        assert comfy.calls == [("load_models_gpu", ["dit"], True)]
        assert comfy.loaded_names() == ["dit"]
        assert comfy.mm.current_loaded_models[0].model.model.weights is dit.module
        assert not hasattr(dit.module, "model_loaded_weight_memory")
        assert type(comfy.mm.current_loaded_models[0].model.model).__name__ == "VideoDiT_Linear"
    # standalone semantics kept: no offload after use unless asked; ComfyUI may unload it later
    assert comfy.loaded_names() == ["dit"]
    dit.load()
    assert comfy.calls[-1] == ("load_models_gpu", ["dit"], True)
    assert dit.comfyui_patcher is comfy.mm.current_loaded_models[0].model  # one patcher per model


def test_models_in_use_are_named_when_another_loads(comfy):
    dit, vae = _tiny("dit"), _tiny("vae")
    with dit.use():
        with vae.use():
            pass
    # ComfyUI evicts whatever is not in the same call, so the DiT in use is passed along
    assert comfy.calls == [("load_models_gpu", ["dit"], True),
                           ("load_models_gpu", ["dit", "vae"], True)]
    with vae.use():
        pass
    assert comfy.calls[-1] == ("load_models_gpu", ["vae"], True)


def test_offload_after_unregisters_from_comfyui(comfy):
    encoder, dit = _tiny("umt5"), _tiny("dit")
    dit.load()
    with encoder.use(offload_after=True):
        assert comfy.loaded_names() == ["umt5", "dit"]
    assert comfy.loaded_names() == ["dit"]
    assert ("model_unload", "umt5") in comfy.calls
    encoder.offload()  # already unloaded: nothing to do, no error
    assert comfy.calls.count(("model_unload", "umt5")) == 1


def test_use_releases_its_claim_when_the_body_fails(comfy):
    dit, vae = _tiny("dit"), _tiny("vae")
    with pytest.raises(RuntimeError):
        with dit.use():
            raise RuntimeError("boom")
    vae.load()
    assert comfy.calls[-1] == ("load_models_gpu", ["vae"], True)


def test_interrupt_is_comfyuis_own_exception(comfy):
    progress.check_interrupt()
    comfy.interrupt = True
    with pytest.raises(comfy.InterruptProcessingException):
        progress.check_interrupt()
    progress.check_interrupt()  # the flag was consumed, as ComfyUI does
    bar = progress.Progress(3)
    comfy.interrupt = True
    with pytest.raises(comfy.InterruptProcessingException):
        bar.update(1)  # every update is an interrupt point
    # the standalone Cancel flag is not consulted inside ComfyUI
    progress.request_interrupt()
    try:
        progress.check_interrupt()
    finally:
        progress.clear_interrupt()


def test_progress_belongs_to_the_executing_node(comfy):
    comfy.context = _ExecutionContext("prompt-1", "17", None)
    bar = progress.Progress(4, "sampling")
    bar.update(1)
    bar.update(5)  # clamped to the total
    assert comfy.bars[0].node_id == "17"
    assert comfy.bars[0].updates == [(1, 4, None), (4, 4, None)]
    progress.Progress(2, node_id="3")
    assert comfy.bars[1].node_id == "3"  # an explicit id wins
    comfy.context = None
    progress.Progress(2)
    assert comfy.bars[2].node_id is None  # ComfyUI then falls back to its last node


def test_previews_follow_the_servers_preview_method(comfy):
    x0 = torch.randn(1, 16, 3, 4, 6)
    comfy.args.preview_method = _PreviewMethod.NoPreviews
    assert not previews.previews_enabled()
    assert previews.latent_preview(x0, "wan21") is None
    bar = progress.Progress(2)
    from PIL import Image

    image = Image.new("RGB", (6, 4))
    bar.update(1, preview=image)  # made anyway by a caller: still not sent
    assert comfy.bars[0].updates[-1] == (1, 2, None)

    comfy.args.preview_method = _PreviewMethod.Auto  # e.g. --preview-method auto
    assert previews.previews_enabled()
    picture = previews.latent_preview(x0, "wan21", frames=3)
    assert picture.size == (18, 4)
    bar.update(1, preview=picture)
    assert comfy.bars[0].updates[-1] == (2, 2, ("JPEG", picture, 384))  # --preview-size

    comfy.args.preview_method = "latent2rgb"  # a plain string set by another extension
    assert previews.previews_enabled()
