"""The runtime without ComfyUI: devices, weights moving, progress, Cancel and preview receivers."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from comfyui_videodit.errors import Interrupted
from comfyui_videodit.runtime import devices, host, memory, previews, progress


@pytest.fixture
def freed(monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "free_memory", lambda n, device: calls.append((n, device)))
    return calls


def test_host_detection_needs_both_comfyui_modules(monkeypatch):
    monkeypatch.delenv("VIDEODIT_STANDALONE", raising=False)
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    monkeypatch.setitem(sys.modules, "comfy.model_management", types.ModuleType("x"))
    assert not host.inside_comfyui()  # a stray comfy package on sys.path is not ComfyUI
    assert host.comfy_module("comfy.utils") is None
    monkeypatch.setitem(sys.modules, "folder_paths", types.ModuleType("folder_paths"))
    assert host.inside_comfyui()
    monkeypatch.setenv("VIDEODIT_STANDALONE", "1")
    assert not host.inside_comfyui()


def test_device_override(monkeypatch):
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    assert devices.compute_device() == torch.device("cpu")
    assert devices.offload_device() == torch.device("cpu")


def test_load_makes_room_then_moves_once(freed):
    module = nn.Linear(8, 4)  # 36 float32 values
    managed = memory.ManagedModel(module, "lin", load_device=torch.device("meta"),
                                  offload_device=torch.device("cpu"))
    assert managed.size_bytes == 36 * 4
    with managed.use() as used:
        assert used is module and module.weight.device.type == "meta"
    assert freed == [(144, torch.device("meta"))]
    managed.load()  # already there: no second request for room
    assert freed == [(144, torch.device("meta"))]
    assert module.weight.device.type == "meta"  # standalone: stays loaded after use


def test_offload_after_use(freed):
    module = nn.Linear(2, 2)
    managed = memory.ManagedModel(module, "lin", load_device=torch.device("cpu"),
                                  offload_device=torch.device("meta"))
    with managed.use(offload_after=True):
        assert module.weight.device.type == "cpu"
    assert freed == []  # it was already on the compute device
    assert managed.current_device().type == "meta"
    assert managed.comfyui_patcher is None  # nothing of ComfyUI is made standalone


def test_progress_counts_and_cancel_stops_at_next_update():
    bar = progress.Progress(3, "steps", quiet=True)
    bar.update(2)
    bar.update(5)
    assert bar.value == 3
    progress.request_interrupt()
    with pytest.raises(Interrupted, match="cancelled"):
        bar.update(1)
    bar.update(0)  # the request was consumed by the stage it stopped
    assert progress.executing_node_id() is None


def test_previews_go_to_the_registered_receiver():
    from PIL import Image

    received = []
    x0 = torch.zeros(1, 48, 2, 3, 5)
    assert not previews.previews_enabled()  # off unless asked
    assert previews.latent_preview(x0) is None
    previews.set_preview_sink(lambda image, value, total: received.append((image.size, value, total)))
    try:
        assert previews.previews_enabled()
        picture = previews.latent_preview(x0)
        assert picture.size == (5, 3)
        with progress.Progress(4, quiet=True) as bar:
            bar.update(1)
            bar.update(1, preview=picture)
            bar.update(1, preview=Image.new("RGB", (7, 2)))
        assert received == [((5, 3), 2, 4), ((7, 2), 3, 4)]
    finally:
        previews.set_preview_sink(None)
    assert previews.latent_preview(x0) is None


def test_runtime_imports_no_pil():
    code = ("import sys; import comfyui_videodit.runtime.progress, comfyui_videodit.runtime.previews, "
            "comfyui_videodit.runtime.memory; print('PIL' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
