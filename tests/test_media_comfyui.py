"""Load Video -> Save Video inside a real ComfyUI (skipped without a checkout).

Set ``VIDEODIT_COMFYUI_DIR`` to a ComfyUI checkout with this pack in ``custom_nodes`` and, if
ComfyUI needs its own interpreter, ``VIDEODIT_COMFYUI_PYTHON``. ComfyUI runs on CPU on a
random loopback port with its input/output folders in a temporary directory.
"""
from __future__ import annotations

import json
import os
import time
import urllib.parse
import urllib.request

import pytest
import torch

from comfyui_videodit.media import metadata
from comfyui_videodit.media.decode import load_clip
from comfyui_videodit.media.encode import save_clip

from comfyui_server import ComfyUIServer, get_json

pytestmark = pytest.mark.comfyui


def _get(url: str):
    return get_json(url, timeout=10)


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    server = ComfyUIServer(tmp_path_factory.mktemp("comfyui_media"), extra_args=()).start()
    try:
        yield server.url, server.base
    finally:
        server.stop()


def _run(url: str, prompt: dict, extra_pnginfo: dict) -> dict:
    body = json.dumps({"prompt": prompt, "extra_data": {"extra_pnginfo": extra_pnginfo}})
    request = urllib.request.Request(url + "/prompt", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        prompt_id = json.loads(response.read())["prompt_id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        history = _get(f"{url}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed"):
            return history[prompt_id]
        if prompt_id in history and history[prompt_id].get("status", {}).get(
                "status_str") == "error":
            pytest.fail(json.dumps(history[prompt_id]["status"], indent=1)[-3000:])
        time.sleep(0.3)
    pytest.fail("the prompt did not finish")


def test_load_and_save_inside_comfyui(comfyui, tmp_path):
    url, root = comfyui
    # a source clip in ComfyUI's input folder, written by our own saver
    frames = torch.linspace(0.1, 0.9, 9)[:, None, None, None].expand(9, 48, 64, 3).contiguous()
    source = save_clip(frames, 16.0, "mp4", 0, tmp_path, ["source.mp4"])
    os.link(source.path, root / "input" / "source.mp4")

    info = _get(url + "/object_info/VideoDiTLoadVideo")["VideoDiTLoadVideo"]
    video_input = info["input"]["required"]["video"]
    assert "source.mp4" in video_input[0] and video_input[1]["video_upload"] is True

    prompt = {
        "1": {"class_type": "VideoDiTLoadVideo",
              "inputs": {"video": "source.mp4", "skip_first_frames": 1, "frame_limit": 5,
                         "every_nth": 1, "force_fps": 0.0, "size_multiple": 16,
                         "size_mode": "crop", "max_memory_gb": 0.0}},
        "2": {"class_type": "VideoDiTSaveVideo",
              "inputs": {"images": ["1", 0], "fps": ["1", 1], "format": "mp4", "crf": 10,
                         "filename_prefix": "video/roundtrip"}},
    }
    workflow = {"version": 0.4, "nodes": [{"id": 1}, {"id": 2}], "links": []}
    entry = _run(url, prompt, {"workflow": workflow})
    saved = entry["outputs"]["2"]
    assert saved["animated"] == [True]
    image = saved["images"][0]
    assert image == {"filename": "roundtrip_00001_.mp4", "subfolder": "video", "type": "output"}
    path = root / "output" / "video" / image["filename"]
    tags = metadata.read_container_tags(path)
    assert json.loads(tags["prompt"])["2"]["class_type"] == "VideoDiTSaveVideo"
    assert json.loads(tags["workflow"]) == workflow
    clip = load_clip(path)
    assert clip.images.shape == (5, 48, 64, 3) and clip.fps == 16.0
    # ComfyUI serves it to the node's preview
    query = urllib.parse.urlencode(image)
    with urllib.request.urlopen(f"{url}/view?{query}", timeout=10) as response:
        assert response.read() == path.read_bytes()

    # a bad name is refused at queue time with our message, before anything runs
    prompt["1"]["inputs"]["video"] = "../secret.mp4"
    body = json.dumps({"prompt": prompt}).encode()
    request = urllib.request.Request(url + "/prompt", data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert "not a file name inside the input folder" in err.value.read().decode()
