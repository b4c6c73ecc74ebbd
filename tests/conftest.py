"""Shared test settings: deterministic, CPU-only, standalone (no ComfyUI) unless asked."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("VIDEODIT_STANDALONE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty standalone models folder with ComfyUI's sub-folder names."""
    from comfyui_videodit.runtime import model_folders

    for name in ("diffusion_models", "vae", "text_encoders", "clip_vision", "loras"):
        (tmp_path / name).mkdir()
    monkeypatch.setattr(model_folders, "_models_dir_override", tmp_path)
    return tmp_path
