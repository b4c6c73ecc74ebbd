"""The queue client against a real ComfyUI started on CPU (skipped without a checkout).

Set ``VIDEODIT_COMFYUI_DIR`` to a ComfyUI checkout and, if ComfyUI needs its own interpreter,
``VIDEODIT_COMFYUI_PYTHON`` to it (default: this Python). ComfyUI is started on a random
loopback port with its input/output folders in a temporary directory.
"""
from __future__ import annotations

import io
import json
import urllib.request

import pytest

from comfyui_videodit.cli.queue_client import queue_batch

from comfyui_server import ComfyUIServer

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    server = ComfyUIServer(tmp_path_factory.mktemp("comfyui"), extra_args=()).start()
    try:
        yield server.url, server.base
    finally:
        server.stop()


def empty_image_workflow() -> dict:
    """EmptyImage -> ImageInvert -> SaveImage, saved-by-the-editor format, with a Note."""
    return {
        "id": "6c1e7f0a-2b3d-4e5f-8a9b-0c1d2e3f4a5b", "revision": 0,
        "last_node_id": 4, "last_link_id": 2,
        "nodes": [
            {"id": 1, "type": "EmptyImage", "pos": [0, 0], "size": [315, 130], "flags": {},
             "order": 0, "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
             "properties": {"Node name for S&R": "EmptyImage", "cnr_id": "comfy-core"},
             "widgets_values": [32, 24, 1, 0]},
            {"id": 2, "type": "ImageInvert", "pos": [350, 0], "size": [200, 30], "flags": {},
             "order": 1, "mode": 0, "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}],
             "properties": {"Node name for S&R": "ImageInvert"}, "widgets_values": []},
            {"id": 3, "type": "SaveImage", "pos": [600, 0], "size": [300, 300], "flags": {},
             "order": 2, "mode": 0, "title": "Save",
             "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [],
             "properties": {"Node name for S&R": "SaveImage"}, "widgets_values": ["videodit"]},
            {"id": 4, "type": "Note", "pos": [0, 200], "size": [300, 80], "flags": {},
             "order": 3, "mode": 0, "inputs": [], "outputs": [], "properties": {},
             "widgets_values": ["the colour is inverted before saving"]},
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "version": 0.4,
    }


def test_a_sweep_runs_on_real_comfyui_and_the_outputs_come_back(comfyui, tmp_path):
    from PIL import Image

    url, _ = comfyui
    out = tmp_path / "out"
    result = queue_batch(empty_image_workflow(), [url], sets=["EmptyImage.color=[0, 16711680]"],
                         output_dir=out, stream=io.StringIO(), poll_s=0.5)
    assert result.total == 2 and len(result.succeeded) == 2, result.records
    colours = {}
    for record in result.records:
        (name,) = record["outputs"]
        with Image.open(out / name) as image:
            assert image.size == (32, 24)
            colours[record["overrides"]["EmptyImage.color"]] = image.convert("RGB").getpixel((5, 5))
    # EmptyImage colour 0xRRGGBB, inverted by ImageInvert
    assert colours == {0: (255, 255, 255), 16711680: (0, 255, 255)}
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["success", "success"]


def test_real_validation_errors_read_in_plain_words(comfyui):
    import asyncio

    from comfyui_videodit.cli.comfy_server import ComfyServer, PromptRejected

    url, _ = comfyui

    async def submit():
        server = ComfyServer(url, "videodit-test")
        await server.open()
        try:
            prompt = {"1": {"class_type": "EmptyImage", "inputs": {
                          "width": 0, "height": 24, "batch_size": 1, "color": 0}},
                      "3": {"class_type": "SaveImage", "inputs": {
                          "images": ["1", 0], "filename_prefix": "x"}}}
            with pytest.raises(PromptRejected) as rejected:
                await server.submit(prompt, "5b4c3d2e-1f0a-4b9c-8d7e-6f5a4b3c2d1e")
            return [str(p) for p in rejected.value.problems]
        finally:
            await server.close()

    problems = asyncio.run(submit())
    assert problems == ["#1 EmptyImage · width: the value is below the minimum (got 0). Fix: use "
                        "a value from 1 to 16384"]


def test_real_server_queues_a_prompt_with_one_bad_output_and_says_which(comfyui):
    import asyncio
    import uuid

    from comfyui_videodit.cli.comfy_server import ComfyServer

    url, _ = comfyui

    async def submit():
        server = ComfyServer(url, "videodit-test")
        await server.open()
        try:
            prompt = {
                "1": {"class_type": "EmptyImage", "inputs": {
                    "width": 8, "height": 8, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {
                    "images": ["1", 0], "filename_prefix": "good"}},
                "3": {"class_type": "EmptyImage", "inputs": {
                    "width": 8, "height": 99999, "batch_size": 1, "color": 0}},
                "4": {"class_type": "SaveImage", "inputs": {
                    "images": ["3", 0], "filename_prefix": "bad"}}}
            prompt_id = str(uuid.uuid4())
            skipped = await server.submit(prompt, prompt_id)
            for _ in range(100):
                state, history = await server.prompt_state(prompt_id)
                if state == "done":
                    return skipped, history
                await asyncio.sleep(0.1)
            raise AssertionError("the prompt did not finish")
        finally:
            await server.close()

    skipped, history = asyncio.run(submit())
    assert [str(p) for p in skipped] == [
        "#3 EmptyImage · height: the value is above the maximum (got 99999). Fix: use a value "
        "from 1 to 16384"]
    assert list(history["outputs"]) == ["2"]  # only the good output ran


def test_input_images_are_uploaded_to_real_comfyui(comfyui, tmp_path):
    from PIL import Image

    url, root = comfyui
    Image.new("RGB", (16, 12), (10, 200, 30)).save(tmp_path / "green.png")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("name,LoadImage.image\nfirst,green.png\nsecond,green.png\n")
    workflow = empty_image_workflow()
    workflow["nodes"][0] = {
        "id": 1, "type": "LoadImage", "pos": [0, 0], "size": [315, 314], "flags": {},
        "order": 0, "mode": 0, "inputs": [],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]},
                    {"name": "MASK", "type": "MASK", "links": None}],
        "properties": {"Node name for S&R": "LoadImage"},
        "widgets_values": ["example.png", "image"]}
    out = tmp_path / "out"
    result = queue_batch(workflow, [url], jobs_file=jobs, output_dir=out, stream=io.StringIO(),
                         poll_s=0.5)
    assert len(result.succeeded) == 2, result.records
    for record in result.records:
        (name,) = record["outputs"]
        with Image.open(out / name) as image:
            assert image.size == (16, 12)
            pixel = image.convert("RGB").getpixel((3, 3))
            assert all(abs(a - b) <= 1 for a, b in zip(pixel, (245, 55, 225)))  # inverted green
    uploaded = [p.name for p in (root / "input").iterdir() if p.is_file()]
    assert len(uploaded) == 1 and uploaded[0].startswith("green-")  # stored once


def test_our_node_definitions_match_what_comfyui_serves(comfyui):
    """cli/node_info.py builds /object_info entries from our classes for the headless runner;
    they must be what ComfyUI itself serves for the same classes (python_module aside)."""
    from comfyui_videodit import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from comfyui_videodit.cli.node_info import object_info

    url, _ = comfyui
    served = json.loads(urllib.request.urlopen(url + "/object_info", timeout=30).read())
    ours = object_info(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    assert ours, "the pack registers no nodes"


    def comparable(info):
        """Without python_module, and with file-choice lists as just "a list": ComfyUI lists
        its own model folders, the standalone process the --models-dir."""
        info = json.loads(json.dumps(info))
        info.pop("python_module")
        for section in info["input"].values():
            for entry in section.values():
                if isinstance(entry, list) and entry and isinstance(entry[0], list):
                    entry[0] = "<choices>"
        return info

    for node_id, info in ours.items():
        assert node_id in served, f"{node_id} is not loaded by ComfyUI (import failed?)"
        assert comparable(info) == comparable(served[node_id]), node_id


def test_our_load_and_save_video_nodes_run_through_real_comfyui(comfyui, tmp_path):
    """A clip is uploaded per job (video_upload combo) and re-encoded by this pack's nodes."""
    from test_cli_run_media import load_save_workflow, read_clip, write_clip

    url, root = comfyui
    served = json.loads(urllib.request.urlopen(url + "/object_info/VideoDiTLoadVideo").read())
    if not served:
        pytest.skip("this ComfyUI does not have the pack in custom_nodes")
    write_clip(tmp_path / "clip.mp4")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"name": "all", "VideoDiTLoadVideo.video": "clip.mp4"}\n'
                    '{"name": "five", "VideoDiTLoadVideo.video": "clip.mp4", '
                    '"VideoDiTLoadVideo.frame_limit": 5}\n')
    out = tmp_path / "out"
    result = queue_batch(load_save_workflow(), [url], jobs_file=jobs, output_dir=out,
                         stream=io.StringIO(), poll_s=0.5)
    assert len(result.succeeded) == 2, result.records
    by_name = {r["name"]: r for r in result.records}
    (all_frames,) = by_name["000_all"]["outputs"]
    (five_frames,) = by_name["001_five"]["outputs"]
    assert all_frames.endswith(".mp4") and five_frames.endswith(".mp4")
    assert read_clip(out / all_frames).shape == (9, 32, 32, 3)
    assert read_clip(out / five_frames).shape == (5, 32, 32, 3)
