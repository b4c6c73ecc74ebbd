"""Shared test settings: deterministic, CPU-only, standalone (no ComfyUI) unless asked."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("VIDEODIT_STANDALONE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


REPO_ROOT = Path(__file__).resolve().parent.parent


class _RepoRootIsAPlainFolder:
    """Collect the repository root as a folder, not as a package.

    The root is a package for ComfyUI (which imports its ``__init__.py`` by path), but a
    clone's folder name is often not a Python identifier (``ComfyUI-VideoDiT``), and pytest
    would try to import it under that name. Tests import the installed ``comfyui_videodit``.
    Registered as a global plugin because a conftest's own hooks do not reach its parent folder.
    """

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if path.resolve() == REPO_ROOT:
            return pytest.Dir.from_parent(parent, path=path)
        return None


def pytest_configure(config):
    config.pluginmanager.register(_RepoRootIsAPlainFolder(), "videodit-repo-root-as-folder")


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``).
    Tiny models and clips are all overhead: a second thread only adds synchronisation, and on a
    2-core machine busy with other work it can make them tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory):
    """A models folder holding tiny random models in the real file layouts (tests/tiny_models.py)."""
    pytest.importorskip("transformers")
    from tiny_models import write_all

    root = tmp_path_factory.mktemp("tiny_models")
    for name in ("diffusion_models", "vae", "text_encoders", "clip_vision", "loras"):
        (root / name).mkdir()
    write_all(root)
    return root


@pytest.fixture
def tiny_sampling_graph(monkeypatch):
    """``build(models_dir, steps)`` -> ``sample(model, low=None, cfg=3.0)``: the latents of a
    small text-to-video graph run through the real nodes (tiny umT5 and Wan 2.1 VAE from
    ``models_dir``, 64x64x9, seed 11, shift 5, UniPC; ``low`` is the low-noise expert, which
    takes over at 0.9)."""
    from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent
    from comfyui_videodit.nodes.sampling import VideoDiTSampler
    from comfyui_videodit.nodes.text import VideoDiTTextEncode, VideoDiTTextEncoderLoader
    from comfyui_videodit.nodes.vae import VideoDiTVAELoader
    from comfyui_videodit.runtime import model_folders

    def build(models_dir, steps: int):
        monkeypatch.setattr(model_folders, "_models_dir_override", models_dir)
        encoder = VideoDiTTextEncoderLoader().load("tiny_umt5.safetensors", "fp32", "cpu")[0]
        cond = VideoDiTTextEncode().encode(encoder, "a red ball rolls", "blurry")[0]
        vae = VideoDiTVAELoader().load("tiny_vae21.safetensors", "fp32")[0]
        latent = VideoDiTEmptyLatent().make(vae, 64, 64, 9, 1)[0]

        def sample(model, low=None, cfg=3.0):
            return VideoDiTSampler().sample(model, cond, latent, 11, steps, cfg, 5.0, "unipc",
                                            1.0, model_low_noise=low,
                                            boundary=0.9)[0]["samples"]
        return sample
    return build
