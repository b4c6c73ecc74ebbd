"""Every example workflow, opened in ComfyUI's own editor in headless Chromium, and queued there.

Skipped unless a ComfyUI checkout is given (``VIDEODIT_COMFYUI_DIR``, see comfyui_server.py),
Playwright is installed (the ``e2e`` extra) and a Chromium binary exists (``VIDEODIT_CHROMIUM``,
default ``/usr/bin/chromium``; Debian's ``chromium`` package; ``playwright install`` is not
needed). For each workflow the editor served by that ComfyUI (its comfyui-frontend-package)
loads the file as a user opening it would; no node may be missing or flagged; the workflow is
queued from the editor, and the clip must appear in the Save Video node's preview and be
fetchable from the URL the editor shows.

The demo workflows run as shipped (bundled demo model and inputs). The others name real Wan
files: tiny random models are written under those names, the inputs they expect are generated,
and their size, length and steps are shrunk in the file before it is opened, so each runs in
seconds on CPU.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from comfyui_server import REPO_ROOT, ComfyUIServer, get_json, require_comfyui

pytestmark = [pytest.mark.comfyui, pytest.mark.e2e]

CHROMIUM = os.environ.get("VIDEODIT_CHROMIUM", "/usr/bin/chromium")
WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# Real-model workflows on tiny models: small clips, few steps.
SHRINK = {
    "VideoDiTEmptyLatent": {"width": 64, "height": 64, "length": 9},
    "VideoDiTImageToVideo": {"width": 64, "height": 64, "length": 9},
    "VideoDiTVACEConditioning": {"width": 64, "height": 64, "length": 9},
    "VideoDiTSampler": {"steps": 2},
    "VideoDiTFlowEditSampler": {"steps": 3, "skip_steps": 1},
    # as many frames as the shrunk length: a VACE control video must have exactly that many
    "VideoDiTLoadVideo": {"frame_limit": 9},
}
# demo_long_video renders five windows at full demo settings: about a minute on an idle 2-core
# CPU, several times that on a busy one; the others take seconds.
RUN_TIMEOUT_S = 300


def _write_tiny_models(models: Path) -> None:
    from tiny_models import write_dit, write_lora, write_text_encoder, write_vace_dit, write_vae

    write_dit(models / "diffusion_models", "wan2.1_t2v_1.3B_fp16.safetensors", "t2v")
    write_dit(models / "diffusion_models", "wan2.2_ti2v_5B_fp16.safetensors", "ti2v", seed=2)
    # the A14B pair: two experts, each with its own 4-step LoRA
    for expert, seed in (("high", 0), ("low", 5)):
        write_dit(models / "diffusion_models",
                  f"wan2.2_t2v_{expert}_noise_14B_fp8_scaled.safetensors", "t2v", seed=seed)
    (models / "loras").mkdir(exist_ok=True)
    write_lora(models / "loras", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors")
    write_lora(models / "loras", "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors",
               seed=1)
    write_vace_dit(models / "diffusion_models", "wan2.1_vace_1.3B_fp16.safetensors")
    write_vace_dit(models / "diffusion_models", "wan2.1_vace_14B_fp16.safetensors", seed=7)
    write_vae(models / "vae", "wan_2.1_vae.safetensors", "2.1")
    write_vae(models / "vae", "wan2.2_vae.safetensors", "2.2")
    write_text_encoder(models / "text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors")


def _write_inputs(folder: Path) -> None:
    import shutil

    import torch
    from PIL import Image

    from comfyui_videodit.media.encode import save_clip
    from comfyui_videodit.runtime import io_folders

    frame = torch.zeros(64, 64, 3, dtype=torch.uint8)
    frame[16:40, 20:44] = torch.tensor([40, 90, 240], dtype=torch.uint8)
    Image.fromarray(frame.numpy()).save(folder / "example_start_frame.png")
    Image.fromarray(frame.numpy()).save(folder / "example_reference.png")
    shutil.copy(io_folders.DEMO_INPUT_DIR / "demo_source_clip.mp4",
                folder / "example_source_clip.mp4")

    def save(name: str, clip: torch.Tensor) -> None:
        save_clip(clip, 16.0, "mp4", 19, folder, [name])

    frames = 17
    ramp = torch.linspace(0, 1, 64)
    moving = torch.stack([ramp.roll(3 * t)[None, :, None].expand(64, 64, 3) for t in range(frames)])
    save("example_pose_video.mp4", moving)
    save("example_narrow_clip.mp4", moving[:, :, 16:48].contiguous())  # half as wide: outpainted
    mask = torch.zeros(frames, 64, 64, 3)
    mask[:, 16:48, 16:48] = 1.0  # white = regenerate
    save("example_inpaint_mask.mp4", mask)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_comfyui()
    pytest.importorskip("playwright.sync_api", reason="install the e2e extra: pip install -e .[e2e]")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set VIDEODIT_CHROMIUM)")
    running = ComfyUIServer(tmp_path_factory.mktemp("comfyui-editor"))
    _write_tiny_models(running.base / "models")
    _write_inputs(running.base / "input")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def editor(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.console_errors = []
        page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
        page.on("pageerror", lambda e: page.console_errors.append(str(e)))
        page.goto(server.url, wait_until="domcontentloaded")
        page.wait_for_function("() => window.app && window.app.graph && window.app.api",
                               timeout=60_000)
        try:
            yield page
        finally:
            browser.close()


def _widget_names(info: dict, kind: str) -> list[str]:
    """Widget values in a saved node, by name, in the order the editor stores them."""
    from comfyui_videodit.cli.node_info import (has_control_widget, input_spec, is_widget,
                                                ordered_inputs)

    names = []
    for name in ordered_inputs(info[kind]):
        _, socket, options = input_spec(info[kind], name)
        if is_widget(socket, options):
            names.append(name)
            if has_control_widget(name, socket, options):
                names.append("control_after_generate")
    return names


def _shrunk(workflow: dict, info: dict) -> dict:
    for node in workflow["nodes"]:
        changes = SHRINK.get(node["type"])
        if not changes:
            continue
        names = _widget_names(info, node["type"])
        for name, value in changes.items():
            node["widgets_values"][names.index(name)] = value
    return workflow


def _dialog_text(page) -> str:
    return page.evaluate("""() => [...document.querySelectorAll('.p-dialog, [role=dialog]')]
        .map(d => d.innerText).join('\\n')""")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_and_runs_in_the_editor(server, editor, path):
    page = editor
    info = get_json(server.url + "/object_info")
    workflow = json.loads(path.read_text(encoding="utf-8"))
    if not path.stem.startswith("demo_"):
        workflow = _shrunk(workflow, info)
    page.console_errors.clear()
    page.evaluate("""() => document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close')
        .forEach(b => b.click())""")
    nodes = page.evaluate("""async (wf) => {
        await window.app.loadGraphData(wf);
        return window.app.graph._nodes.map(n => ({id: n.id, type: n.type,
            registered: !!(window.LiteGraph && window.LiteGraph.registered_node_types[n.type]),
            has_errors: !!n.has_errors}));
    }""", workflow)
    assert len(nodes) == len(workflow["nodes"]), f"{path.name}: the editor made {len(nodes)} nodes"
    unknown = [n["type"] for n in nodes
               if n["type"] not in info and n["type"] not in FRONTEND_ONLY_TYPES]
    assert not unknown, f"{path.name}: node types unknown to the server: {unknown}"
    flagged = [n for n in nodes if n["has_errors"] or not n["registered"]]
    assert not flagged, f"{path.name}: nodes missing or in error in the editor: {flagged}"
    dialog = _dialog_text(page)
    assert "missing" not in dialog.lower(), f"{path.name}: the editor says: {dialog[:500]}"

    save_ids = [n["id"] for n in workflow["nodes"] if n["type"] == "VideoDiTSaveVideo"]
    assert save_ids, f"{path.name} has no Save Video node"
    page.evaluate("() => window.app.queuePrompt(0, 1)")
    deadline = time.monotonic() + RUN_TIMEOUT_S
    preview = None
    while time.monotonic() < deadline:
        preview = page.evaluate("""(id) => {
            const outputs = window.app.nodeOutputs || {};
            const out = outputs[String(id)] || outputs[id];
            const node = window.app.graph.getNodeById(id);
            const errors = window.app.lastNodeErrors || null;
            const failed = window.app.lastExecutionError || null;
            const media = [...document.querySelectorAll('video, img')]
                .map(e => e.currentSrc || e.src || '').filter(s => s.includes('/view?'));
            return {images: out && out.images ? out.images : null, media,
                    node_imgs: node && node.imgs ? node.imgs.length : 0,
                    errors: errors && Object.keys(errors).length ? errors : null,
                    failed: failed ? (failed.exception_message || JSON.stringify(failed)) : null};
        }""", save_ids[0])
        if preview["errors"] or preview["failed"]:
            break
        if preview["images"] and any(f"filename={preview['images'][0]['filename']}" in m
                                     for m in preview["media"]):
            break
        time.sleep(0.5)
    assert not preview["errors"], f"{path.name}: the server refused it: {preview['errors']}"
    assert not preview["failed"], f"{path.name}: it failed while running: {preview['failed']}\n" \
                                  f"{server.log()[-2000:]}"
    assert preview["images"], f"{path.name}: no output reached the Save Video node in " \
                              f"{RUN_TIMEOUT_S} s; console: {page.console_errors[-5:]}"
    filename = preview["images"][0]["filename"]
    shown = [m for m in preview["media"] if f"filename={filename}" in m]
    assert shown, f"{path.name}: {filename} is not shown in the editor (media: {preview['media']})"
    status, size = page.evaluate("""async (src) => {
        const r = await fetch(src); const b = await r.arrayBuffer(); return [r.status, b.byteLength];
    }""", shown[0])
    assert status == 200 and size > 1000, f"{path.name}: the preview URL gave {status}, {size} bytes"
