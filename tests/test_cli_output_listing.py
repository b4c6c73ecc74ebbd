"""What the runner prints: a PNG sequence's folder once (not every frame), and its own name."""
from __future__ import annotations

import json
import sys

from PIL import Image

from comfyui_videodit.cli.main import build_parser, main, program_name


def test_a_png_sequence_is_printed_as_its_folder_once(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    frames = [Image.new("RGB", (32, 32), (i * 60, 0, 0)) for i in range(4)]
    frames[0].save(tmp_path / "in" / "clip.gif", save_all=True, append_images=frames[1:],
                   duration=62, loop=0)
    workflow = {
        "1": {"class_type": "VideoDiTLoadVideo", "inputs": {
            "video": "clip.gif", "skip_first_frames": 0, "frame_limit": 0, "every_nth": 1,
            "force_fps": 0.0, "size_multiple": 16, "size_mode": "crop", "max_memory_gb": 0.0}},
        "2": {"class_type": "VideoDiTSaveVideo", "inputs": {
            "images": ["1", 0], "fps": 16.0, "format": "png-sequence", "crf": 0,
            "filename_prefix": "seq/take"}},
    }
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow))
    code = main(["run", str(path), "--output-dir", str(tmp_path / "out"),
                 "--input-dir", str(tmp_path / "in")])
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert code == 0, captured.err
    assert len(out) == 1, out
    folder = (tmp_path / "out" / "seq").resolve()
    assert out[0].startswith(str(folder)) and not out[0].endswith(".png")
    assert len(list((tmp_path / "out").rglob("*.png"))) == 4


def test_help_names_the_command_that_was_run(monkeypatch, capsys):
    assert program_name("/usr/local/bin/videodit") == "videodit"
    assert program_name("/x/comfyui_videodit/__main__.py") == "python -m comfyui_videodit"
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/videodit", "--help"])
    assert build_parser().format_usage().startswith("usage: videodit ")
    monkeypatch.setattr(sys, "argv", ["/x/comfyui_videodit/__main__.py"])
    assert build_parser().format_usage().startswith("usage: python -m comfyui_videodit ")
