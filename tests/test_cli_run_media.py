"""The runner on this pack's real nodes: Load Video -> Save Video, from a saved UI workflow."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from comfyui_videodit.cli.main import main


def write_clip(path: Path, frames: int = 9, size: int = 32) -> None:
    """A small H.264 clip: a bright square moving right over a dark background."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for index in range(frames):
            image = np.full((size, size, 3), 20, np.uint8)
            image[8:20, 2 + 2 * index:14 + 2 * index] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_clip(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def load_save_workflow() -> dict:
    return {
        "id": "2f0d8c7b-9a6e-4d5c-8b4a-3f2e1d0c9b8a", "revision": 0,
        "last_node_id": 3, "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "VideoDiTLoadVideo", "pos": [0, 0], "size": [320, 300],
             "flags": {}, "order": 0, "mode": 0, "inputs": [],
             "outputs": [{"name": "images", "type": "IMAGE", "links": [1]},
                         {"name": "fps", "type": "FLOAT", "links": [2]},
                         {"name": "frame_count", "type": "INT", "links": None}],
             "properties": {"Node name for S&R": "VideoDiTLoadVideo"},
             "widgets_values": ["clip.mp4", 0, 0, 1, 0.0, 16, "crop", 0.0]},
            {"id": 2, "type": "VideoDiTSaveVideo", "pos": [400, 0], "size": [320, 300],
             "flags": {}, "order": 1, "mode": 0, "title": "Save clip",
             "inputs": [{"name": "images", "type": "IMAGE", "link": 1},
                        {"name": "fps", "type": "FLOAT", "widget": {"name": "fps"}, "link": 2}],
             "outputs": [{"name": "path", "type": "STRING", "links": None}],
             "properties": {"Node name for S&R": "VideoDiTSaveVideo"},
             "widgets_values": [16.0, "mp4", 19, "clips/run"]},
            {"id": 3, "type": "Note", "pos": [0, 350], "size": [300, 60], "flags": {},
             "order": 2, "mode": 0, "inputs": [], "outputs": [], "properties": {},
             "widgets_values": ["re-encodes the input clip"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 1, 1, 2, 1, "FLOAT"]],
        "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "version": 0.4,
    }


def test_run_loads_and_saves_a_real_clip_without_overwriting(tmp_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    write_clip(inputs / "clip.mp4")
    workflow = tmp_path / "load_save.json"
    workflow.write_text(json.dumps(load_save_workflow()))
    command = ["run", str(workflow), "--input-dir", str(inputs), "--output-dir", str(outputs)]

    assert main(command) == 0
    first = Path(capsys.readouterr().out.strip())
    assert first == (outputs / "clips" / "run_00001_.mp4").resolve()
    source, saved = read_clip(inputs / "clip.mp4"), read_clip(first)
    assert saved.shape == source.shape == (9, 32, 32, 3)
    assert np.abs(saved.astype(int) - source.astype(int)).mean() < 4  # crf 19 re-encode

    assert main(command + ["--set", "1.frame_limit=5", "--set", "Save clip.format=gif"]) == 0
    second = Path(capsys.readouterr().out.strip())
    assert second.name == "run_00002_.gif" and first.exists()
    assert read_clip(second).shape[0] == 5

    assert main(command + ["--set", "1.video=missing.mp4"]) == 2
    err = capsys.readouterr().err
    assert "#1 VideoDiTLoadVideo · video: the node rejected its inputs:" in err
    assert "not found in the input folder" in err


def test_a_bypassed_node_hands_its_input_through_like_the_editor(tmp_path):
    """Frame Consistency between load and save, bypassed (mode 4): the save node gets the
    loaded frames, and the bypassed node never runs."""
    from comfyui_videodit.cli.run import run_workflow

    inputs = tmp_path / "in"
    inputs.mkdir()
    write_clip(inputs / "clip.mp4")
    workflow = load_save_workflow()
    workflow["nodes"].append({
        "id": 4, "type": "VideoDiTFrameConsistency", "pos": [200, 0], "size": [300, 250],
        "flags": {}, "order": 1, "mode": 4,
        "inputs": [{"name": "images", "type": "IMAGE", "link": 3},
                   {"name": "reference", "shape": 7, "type": "IMAGE", "link": None}],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]},
                    {"name": "STRING", "type": "STRING", "links": None}],
        "properties": {"Node name for S&R": "VideoDiTFrameConsistency"},
        "widgets_values": [1.0, 1.0, 1.0, 0.6, True, 4.0, False, False]})
    workflow["links"] = [[3, 1, 0, 4, 0, "IMAGE"], [4, 4, 0, 2, 0, "IMAGE"],
                         [2, 1, 1, 2, 1, "FLOAT"]]
    workflow["nodes"][1]["inputs"][0]["link"] = 4
    import io

    result = run_workflow(workflow, input_dir=inputs, output_dir=tmp_path / "out",
                          stream=io.StringIO())
    assert result.prompt["2"]["inputs"]["images"] == ["1", 0]
    assert result.execution.order == ["1", "2"]
    assert read_clip(result.outputs[0]).shape == (9, 32, 32, 3)
