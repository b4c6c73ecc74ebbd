"""The shipped example workflows run headless, end to end, with tiny models substituted.

The examples name the real multi-GB Wan files; here `--set` swaps in tiny random models with
the same file layouts and shrinks the clip, then `python -m comfyui_videodit run` must write a
video that decodes with the requested frame count.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"


@pytest.fixture
def models(tiny_models_dir):
    return tiny_models_dir


def run_example(name: str, models: Path, tmp_path: Path, overrides: list[str]):
    args = [sys.executable, "-m", "comfyui_videodit", "run", str(EXAMPLES / f"{name}.json"),
            "--models-dir", str(models), "--output-dir", str(tmp_path / "out"),
            "--input-dir", str(tmp_path / "in")]
    for item in overrides:
        args += ["--set", item]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


def decoded_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_text_to_video_example_runs_headless(models, tmp_path):
    done = run_example("text_to_video_wan21_1.3B", models, tmp_path, [
        "VideoDiTModelLoader.model_name=tiny_t2v.safetensors",
        "VideoDiTTextEncoderLoader.text_encoder_name=tiny_umt5.safetensors",
        "VideoDiTVAELoader.vae_name=tiny_vae21.safetensors",
        "VideoDiTEmptyLatent.width=64", "VideoDiTEmptyLatent.height=64",
        "VideoDiTEmptyLatent.length=9", "VideoDiTSampler.steps=2"])
    assert done.returncode == 0, done.stderr[-3000:]
    videos = list((tmp_path / "out").rglob("*.mp4"))
    assert len(videos) == 1, done.stdout
    assert str(videos[0]) in done.stdout          # the runner says where the output went
    assert decoded_frames(videos[0]) == 9
    # a second run never overwrites the first
    again = run_example("text_to_video_wan21_1.3B", models, tmp_path, [
        "VideoDiTModelLoader.model_name=tiny_t2v.safetensors",
        "VideoDiTTextEncoderLoader.text_encoder_name=tiny_umt5.safetensors",
        "VideoDiTVAELoader.vae_name=tiny_vae21.safetensors",
        "VideoDiTEmptyLatent.width=64", "VideoDiTEmptyLatent.height=64",
        "VideoDiTEmptyLatent.length=9", "VideoDiTSampler.steps=2"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((tmp_path / "out").rglob("*.mp4"))) == 2


def test_flowedit_example_runs_headless(models, tmp_path):
    (tmp_path / "in").mkdir()
    _write_clip(tmp_path / "in" / "example_source_clip.mp4")
    done = run_example("video_edit_flowedit_wan21_1.3B", models, tmp_path, [
        "VideoDiTModelLoader.model_name=tiny_t2v.safetensors",
        "VideoDiTTextEncoderLoader.text_encoder_name=tiny_umt5.safetensors",
        "VideoDiTVAELoader.vae_name=tiny_vae21.safetensors",
        "VideoDiTLoadVideo.frame_limit=9", "VideoDiTFlowEditSampler.steps=3",
        "VideoDiTFlowEditSampler.skip_steps=1"])
    assert done.returncode == 0, done.stderr[-3000:]
    videos = list((tmp_path / "out").rglob("*.mp4"))
    assert len(videos) == 1 and decoded_frames(videos[0]) == 9


def test_a14b_four_step_lora_example_runs_headless(models, tmp_path):
    """Both experts with their own LoRA (every tensor matches, so no key-report warning), 4
    steps, cfg 1: the runner writes the clip."""
    done = run_example("text_to_video_wan22_a14b_4step_lora", models, tmp_path, [
        "High-noise expert.model_name=tiny_t2v.safetensors",
        "Low-noise expert.model_name=tiny_t2v_low.safetensors",
        "High-noise 4-step LoRA.lora_name=tiny_t2v_lora.safetensors",
        "Low-noise 4-step LoRA.lora_name=tiny_t2v_low_lora.safetensors",
        "VideoDiTTextEncoderLoader.text_encoder_name=tiny_umt5.safetensors",
        "VideoDiTVAELoader.vae_name=tiny_vae21.safetensors",
        "VideoDiTEmptyLatent.width=64", "VideoDiTEmptyLatent.height=64",
        "VideoDiTEmptyLatent.length=9"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "change no weight" not in done.stderr, done.stderr[-3000:]
    videos = list((tmp_path / "out").rglob("*.mp4"))
    assert len(videos) == 1 and decoded_frames(videos[0]) == 9


def _write_clip(path: Path) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(12):
            frame = np.zeros((64, 64, 3), dtype=np.uint8)
            frame[20:40, 4 + 3 * i:24 + 3 * i] = (220, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
