"""The consistency report runs headless like a save node: its verdict is printed by the runner,
also when none of its outputs is connected, and shown on the node in ComfyUI (its UI text)."""
from __future__ import annotations

import json

from PIL import Image

from comfyui_videodit.cli.main import main

LOAD = {"class_type": "VideoDiTLoadVideo", "inputs": {
    "video": "clip.gif", "skip_first_frames": 0, "frame_limit": 0, "every_nth": 1,
    "force_fps": 0.0, "size_multiple": 16, "size_mode": "crop", "max_memory_gb": 0.0}}
REPORT = {"class_type": "VideoDiTConsistencyReport", "inputs": {"images": ["1", 0], "fps": 16.0}}


def write_clip(folder):
    """A square moving right over a gray background, 8 frames."""
    folder.mkdir()
    frames = []
    for i in range(8):
        frame = Image.new("RGB", (48, 48), (128, 128, 128))
        frame.paste((220, 40, 40), (6 + 3 * i, 16, 18 + 3 * i, 28))
        frames.append(frame)
    frames[0].save(folder / "clip.gif", save_all=True, append_images=frames[1:], duration=62,
                   loop=0)


def run(tmp_path, workflow, *extra):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow))
    return main(["run", str(path), "--output-dir", str(tmp_path / "out"),
                 "--input-dir", str(tmp_path / "in"), *extra])


def test_an_unconnected_report_prints_its_verdict(tmp_path, capsys):
    write_clip(tmp_path / "in")
    code = run(tmp_path, {"1": LOAD, "2": REPORT}, "--print-ui")
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [l for l in captured.err.splitlines() if l.startswith("#2 VideoDiT Consistency Report: ")]
    assert len(lines) == 1, captured.err
    assert lines[0].split(": ", 1)[1].startswith("Consistency score ")
    assert any(v in lines[0] for v in ("GOOD", "WARN", "FAIL"))
    assert "no node reported an output file" in captured.err
    ui = json.loads(captured.out.strip().splitlines()[-1])
    assert ui["2"]["text"] == [lines[0].split(": ", 1)[1]]


def test_the_verdict_is_printed_beside_the_saved_files(tmp_path, capsys):
    write_clip(tmp_path / "in")
    save = {"class_type": "VideoDiTSaveVideo", "inputs": {
        "images": ["1", 0], "fps": 16.0, "format": "png-sequence", "crf": 0,
        "filename_prefix": "seq/take"}}
    code = run(tmp_path, {"1": LOAD, "2": REPORT, "3": save})
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # stdout stays a list of written files; the verdict goes with the progress lines
    (written,) = captured.out.strip().splitlines()
    assert written.startswith(str((tmp_path / "out" / "seq").resolve()))
    assert "#2 VideoDiT Consistency Report: Consistency score " in captured.err
