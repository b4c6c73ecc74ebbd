"""What would only fail after the whole render is refused when the workflow is checked, before
any model loads: output name and folder, fps, sizes no VAE takes, frames that cannot fit."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from comfyui_videodit.cli.run import run_workflow
from comfyui_videodit.cli.validate import ValidationFailed
from comfyui_videodit.errors import InputError
from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent, VideoDiTImageToVideo
from comfyui_videodit.nodes.media import VideoDiTSaveVideo
from comfyui_videodit.runtime import io_folders
from comfyui_videodit.samplers import image_conditioning

EXAMPLE = Path(__file__).resolve().parent.parent / "example_workflows" / \
    "text_to_video_wan21_1.3B.json"
TINY = ["VideoDiTModelLoader.model_name=tiny_t2v.safetensors",
        "VideoDiTTextEncoderLoader.text_encoder_name=tiny_umt5.safetensors",
        "VideoDiTVAELoader.vae_name=tiny_vae21.safetensors",
        "VideoDiTEmptyLatent.width=64", "VideoDiTEmptyLatent.height=64",
        "VideoDiTEmptyLatent.length=9", "VideoDiTSampler.steps=1"]


def problems(tiny_models_dir, tmp_path, *sets):
    with pytest.raises(ValidationFailed) as failed:
        run_workflow(EXAMPLE, sets=TINY + list(sets), models_dir=tiny_models_dir,
                     output_dir=tmp_path / "out", input_dir=tmp_path / "in")
    return failed.value.problems


@pytest.fixture(autouse=True)
def _no_model_loads(monkeypatch):
    from comfyui_videodit.nodes import loaders, text, vae

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before validation finished")

    for cls in (loaders.VideoDiTModelLoader, text.VideoDiTTextEncoderLoader,
                vae.VideoDiTVAELoader):
        monkeypatch.setattr(cls, "load", refuse)


def test_bad_name_fps_and_length_are_all_reported_before_anything_runs(tiny_models_dir,
                                                                        tmp_path):
    found = problems(tiny_models_dir, tmp_path, "VideoDiTSaveVideo.filename_prefix=../../x",
                     "VideoDiTSaveVideo.fps=nan", "VideoDiTEmptyLatent.length=80",
                     "VideoDiTEmptyLatent.width=72")
    text = "\n".join(map(str, found))
    assert "would save outside the output folder" in text
    assert "fps: 'nan' is not a finite number" in text or "fps: nan is not a finite" in text
    assert "length must be 4k+1 frames, got 80. Fix: use 77 or 81" in text
    assert "width: the node rejected its inputs: must be a multiple of 16, got 72. Fix: use 64 " \
           "or 80" in text
    assert not (tmp_path / "out" / "video").exists()
    assert [p.input for p in found].count("fps") == 1  # said once, not by both checks


def test_an_output_sub_folder_that_is_a_file_or_not_writable(tiny_models_dir, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "video").write_text("a file where the folder should be")
    found = problems(tiny_models_dir, tmp_path, "VideoDiTSaveVideo.filename_prefix=video/x")
    assert [p.input for p in found] == ["filename_prefix"]
    assert "is a file" in str(found[0])
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            io_folders.set_output_dir(locked)
            verdict = VideoDiTSaveVideo.VALIDATE_INPUTS(16.0, "x")
        finally:
            io_folders.set_output_dir(None)
            locked.chmod(0o700)
        assert "is not writable" in verdict


def test_linked_values_are_left_to_the_run_and_good_values_pass():
    assert VideoDiTSaveVideo.VALIDATE_INPUTS(None, "video/VideoDiT") is True
    assert VideoDiTEmptyLatent.VALIDATE_INPUTS(832, 480, 81, 1) is True
    assert VideoDiTImageToVideo.VALIDATE_INPUTS(None, 480, None) is True
    assert "outside 16..8192" in VideoDiTImageToVideo.VALIDATE_INPUTS(0, 480, 81)


def test_frames_that_cannot_fit_in_memory_are_refused_with_what_fits(monkeypatch):
    gib = 1024 ** 3
    monkeypatch.setattr(image_conditioning.host_memory, "available_ram_bytes", lambda: 2 * gib)
    verdict = VideoDiTEmptyLatent.VALIDATE_INPUTS(1280, 720, 4097, 1)
    assert "need 42.2 GB once decoded, but only 2.0 GB of memory is free" in verdict
    assert "Fix: use length 193 or less at 1280x720" in verdict
    with pytest.raises(InputError, match=r"^length: 2 x 189 frames.*batch_size 1"):
        image_conditioning.check_fits_in_memory(1280, 720, 189, 2)
    image_conditioning.check_fits_in_memory(1280, 720, 189, 1)
