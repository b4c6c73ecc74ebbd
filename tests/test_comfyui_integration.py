"""The pack inside a real ComfyUI (skipped unless ``VIDEODIT_COMFYUI_DIR`` names a checkout).

``VIDEODIT_COMFYUI_PYTHON`` is the interpreter with ComfyUI's requirements (default: this one).
The server runs on CPU on a free loopback port with ``--base-directory`` set to a temporary
folder whose ``custom_nodes/`` holds a link to this repository, so nothing is written into the
checkout. Every wait is bounded and the server is stopped at the end of the module.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from comfyui_videodit import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyui_server import (COMFYUI_DIR, COMFYUI_PYTHON, PACK_FOLDER, REPO_ROOT, ComfyUIServer,
                            comfyui_env, get_json as _get_json, post_json as _post_json,
                            require_comfyui)

pytestmark = pytest.mark.comfyui


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = ComfyUIServer(tmp_path_factory.mktemp("comfyui-base")).start()
    try:
        yield running
    finally:
        running.stop()


def test_pack_imports_cleanly(server):
    log = server.log()
    failed = [line for line in log.splitlines()
              if PACK_FOLDER in line and ("IMPORT FAILED" in line or "Cannot import" in line)]
    assert not failed, log[-4000:]
    assert re.search(r"seconds: .*custom_nodes[/\\]" + re.escape(PACK_FOLDER), log), log[-4000:]


def test_object_info_matches_our_node_classes(server):
    info = _get_json(server.url + "/object_info")
    ours = sorted(name for name in info if name.startswith("VideoDiT"))
    assert ours == sorted(NODE_CLASS_MAPPINGS)
    for name, cls in NODE_CLASS_MAPPINGS.items():
        node = info[name]
        assert node["category"] == cls.CATEGORY, name
        assert node["display_name"] == NODE_DISPLAY_NAME_MAPPINGS[name], name
        assert node["description"] == cls.DESCRIPTION, name
        assert node["output"] == list(cls.RETURN_TYPES), name
        assert node["output_node"] == bool(getattr(cls, "OUTPUT_NODE", False)), name
        # widget order is what saved workflows rely on: it must be exactly our declaration order
        declared = {section: list(inputs) for section, inputs in cls.INPUT_TYPES().items()}
        assert node["input_order"] == declared, name


def test_workflow_templates_list_our_examples(server):
    templates = _get_json(server.url + "/workflow_templates")
    examples = sorted(p.stem for p in (REPO_ROOT / "example_workflows").glob("*.json"))
    assert sorted(templates.get(PACK_FOLDER, [])) == examples
    for name in examples[:3]:  # and each is served as ComfyUI's template browser fetches it
        workflow = _get_json(f"{server.url}/api/workflow_templates/{PACK_FOLDER}/{name}.json")
        assert "nodes" in workflow and "links" in workflow, name


def _wait_for_history(server: ComfyUIServer, prompt_id: str, timeout_s: float = 180) -> dict:
    return server.wait_for_history(prompt_id, timeout_s)


def _write_tiny_umt5(path: Path) -> None:
    """A tiny umT5 in ComfyUI's single-file layout, its SentencePiece model embedded."""
    import io

    spm = pytest.importorskip("sentencepiece")
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    corpus = ["a red ball rolls to the left over a dark blue background",
              "a green square grows slowly on a white background",
              "blurry, static, low quality, watermark"] * 20
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=proto, vocab_size=60, hard_vocab_limit=False,
        model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        minloglevel=2)
    vocab = spm.SentencePieceProcessor(model_proto=proto.getvalue()).get_piece_size()
    config = transformers.UMT5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                     num_heads=4, relative_attention_num_buckets=32,
                                     feed_forward_proj="gated-gelu")
    import torch

    torch.manual_seed(3)
    state = {k: v.clone() for k, v in transformers.UMT5EncoderModel(config).state_dict().items()}
    state["spiece_model"] = torch.frombuffer(bytearray(proto.getvalue()), dtype=torch.uint8)
    save_file(state, path)


def test_text_encoding_prompt_runs_in_comfyui(server, monkeypatch):
    """Our loader and encoder nodes in a queued prompt, shown by ComfyUI's Preview Any node."""
    from comfyui_videodit.nodes.text import VideoDiTTextEncode, VideoDiTTextEncoderLoader
    from comfyui_videodit.runtime import model_folders

    name = "videodit_tiny_umt5.safetensors"
    _write_tiny_umt5(server.base / "models" / "text_encoders" / name)
    positive = "a red ball rolls to the left over a dark blue background"
    prompt = {
        "1": {"class_type": "VideoDiTTextEncoderLoader",
              "inputs": {"text_encoder_name": name, "dtype": "fp32", "device": "default"}},
        "2": {"class_type": "VideoDiTTextEncode",
              "inputs": {"text_encoder": ["1", 0], "positive": positive, "negative": "blurry",
                         "disk_cache": False}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    queued = _post_json(server.url + "/prompt", {"prompt": prompt, "client_id": "videodit-test"})
    assert not queued.get("node_errors"), queued
    record = _wait_for_history(server, queued["prompt_id"])
    assert record["status"]["status_str"] == "success", json.dumps(record["status"])[-3000:]
    shown = record["outputs"]["3"]["text"][0]
    assert shown.startswith("VideoDiTConditioning(") and f"positive_text='{positive}'" in shown

    # the same nodes standalone give the same token counts
    monkeypatch.setattr(model_folders, "_models_dir_override", server.base / "models")
    encoder = VideoDiTTextEncoderLoader().load(name, "fp32", "cpu")[0]
    here = VideoDiTTextEncode().encode(encoder, positive, "blurry")[0]
    assert f"positive_tokens={here.positive_tokens}," in shown
    assert f"negative_tokens={here.negative_tokens}," in shown
    # the encoder went through ComfyUI's memory manager (logged by ComfyUI itself)
    assert "Requested to load VideoDiT_UMT5Encoder" in server.log()


def _write_input_video(path: Path, frames: int, size: int) -> None:
    """A moving-gradient H.264 clip, written with PyAV (what ComfyUI users upload)."""
    av = pytest.importorskip("av")
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        ramp = np.linspace(0, 255, size, dtype=np.float32)
        for t in range(frames):
            rgb = np.stack([np.roll(ramp, 3 * t)[None, :].repeat(size, 0),
                            ramp[:, None].repeat(size, 1), np.full((size, size), 4.0 * (t % 60))], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


async def _run_and_cancel(server: ComfyUIServer, prompt: dict, cancel_node: str, timeout_s: float = 120):
    """Queue ``prompt``, press Cancel at ``cancel_node``'s first progress update, collect events."""
    import aiohttp

    client_id = "videodit-cancel-test"
    events: list[tuple[float, str, dict]] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as socket_:
            async with session.post(server.url + "/prompt",
                                    json={"prompt": prompt, "client_id": client_id}) as response:
                queued = await response.json()
            assert not queued.get("node_errors"), queued
            prompt_id = queued["prompt_id"]
            cancelled_at = None
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                message = await socket_.receive(timeout=deadline - time.monotonic())
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary frames are previews
                event = json.loads(message.data)
                data = event.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                events.append((time.monotonic(), event["type"], data))
                if (event["type"] == "progress" and data.get("node") == cancel_node
                        and cancelled_at is None):
                    cancelled_at = time.monotonic()
                    async with session.post(server.url + "/interrupt",
                                            json={"prompt_id": prompt_id}) as response:
                        assert response.status == 200
                if event["type"] in ("execution_interrupted", "execution_success",
                                     "execution_error"):
                    return prompt_id, cancelled_at, events
    pytest.fail(f"no end of execution within {timeout_s} s; events: {events[-5:]}")


def test_cancel_stops_a_running_node_within_one_update(server):
    """Load Video -> Save Video on a long clip; Cancel while Save Video encodes."""
    import asyncio

    frames = 240
    _write_input_video(server.base / "input" / "videodit_long.mp4", frames, 192)
    prompt = {
        "1": {"class_type": "VideoDiTLoadVideo",
              "inputs": {"video": "videodit_long.mp4", "skip_first_frames": 0, "frame_limit": 0,
                         "every_nth": 1, "force_fps": 0.0, "size_multiple": 16,
                         "size_mode": "crop", "max_memory_gb": 0.0}},
        "2": {"class_type": "VideoDiTSaveVideo",
              "inputs": {"images": ["1", 0], "fps": 16.0, "format": "mp4", "crf": 19,
                         "filename_prefix": "cancel/VideoDiT"}},
    }
    prompt_id, cancelled_at, events = asyncio.run(_run_and_cancel(server, prompt, "2"))
    kinds = [kind for _, kind, _ in events]
    assert cancelled_at is not None, kinds
    assert kinds[-1] == "execution_interrupted", kinds
    # progress is reported per node, by the node that is running
    load_steps = [d for _, k, d in events if k == "progress" and d["node"] == "1"]
    save_steps = [d for _, k, d in events if k == "progress" and d["node"] == "2"]
    assert load_steps and load_steps[-1]["value"] == load_steps[-1]["max"] == frames
    assert save_steps and save_steps[-1]["max"] == frames
    assert save_steps[-1]["value"] < frames  # stopped part-way
    stopped_after = events[-1][0] - cancelled_at
    assert stopped_after < 5.0, stopped_after
    record = _wait_for_history(server, prompt_id)
    assert record["status"]["status_str"] == "error"
    messages = [name for name, _ in record["status"]["messages"]]
    assert "execution_interrupted" in messages
    output = server.base / "output" / "cancel"
    assert not output.exists() or not list(output.iterdir())  # no half-written video left
    print(f"cancel: stopped {stopped_after * 1000:.0f} ms after /interrupt, "
          f"at frame {save_steps[-1]['value']}/{frames}")


def _widget_defaults(node_class) -> dict:
    """Every widget input of ``node_class`` at its default (first option for lists)."""
    values = {}
    for section in ("required", "optional"):
        for name, spec in node_class.INPUT_TYPES().get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if "default" in options:
                values[name] = options["default"]
            elif isinstance(kind, (list, tuple)) and kind:
                values[name] = kind[0]
    return values


def _view(server: ComfyUIServer, entry: dict) -> bytes:
    from urllib.parse import urlencode

    query = urlencode({"filename": entry["filename"], "subfolder": entry["subfolder"],
                       "type": entry["type"]})
    with urllib.request.urlopen(f"{server.url}/view?{query}", timeout=30) as response:
        return response.read()


def test_vae_round_trip_prompt_matches_standalone(server, monkeypatch):
    """Load Video -> VAE Encode -> VAE Decode -> Save Video (PNG) in ComfyUI, and the same here."""
    import io

    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from comfyui_videodit.demo.clips import make_clip
    from comfyui_videodit.nodes.media import VideoDiTLoadVideo
    from comfyui_videodit.nodes.vae import VideoDiTVAEDecode, VideoDiTVAEEncode, VideoDiTVAELoader
    from comfyui_videodit.runtime import io_folders, model_folders

    wan_vae = pytest.importorskip("comfyui_videodit.networks.wan_vae")
    av = pytest.importorskip("av")
    torch.manual_seed(0)
    network = wan_vae.WanVAE(wan_vae.WanVAEConfig("2.1", dim=8, decoder_dim=8, z_dim=16))
    save_file({k: v.contiguous() for k, v in network.state_dict().items()},
              server.base / "models" / "vae" / "videodit_tiny_vae.safetensors")
    clip = make_clip(11)  # 17 frames, 64x64
    with av.open(str(server.base / "input" / "videodit_demo.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for frame in (clip.video * 255).round().to(torch.uint8).numpy():
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)

    # 5 frames (two latent frames) keep the CPU time small
    load = {**_widget_defaults(VideoDiTLoadVideo), "video": "videodit_demo.mp4", "frame_limit": 5}
    vae = {**_widget_defaults(VideoDiTVAELoader), "vae_name": "videodit_tiny_vae.safetensors",
           "dtype": "fp32"}
    prompt = {
        "1": {"class_type": "VideoDiTLoadVideo", "inputs": load},
        "2": {"class_type": "VideoDiTVAELoader", "inputs": vae},
        "3": {"class_type": "VideoDiTVAEEncode",
              "inputs": {**_widget_defaults(VideoDiTVAEEncode), "vae": ["2", 0], "images": ["1", 0]}},
        "4": {"class_type": "VideoDiTVAEDecode",
              "inputs": {**_widget_defaults(VideoDiTVAEDecode), "vae": ["2", 0], "latent": ["3", 0]}},
        "5": {"class_type": "VideoDiTSaveVideo",
              "inputs": {"images": ["4", 0], "fps": 16.0, "format": "png-sequence", "crf": 0,
                         "filename_prefix": "roundtrip/VideoDiT"}},
    }
    queued = _post_json(server.url + "/prompt", {"prompt": prompt, "client_id": "videodit-test"})
    assert not queued.get("node_errors"), queued
    record = _wait_for_history(server, queued["prompt_id"])
    assert record["status"]["status_str"] == "success", json.dumps(record["status"])[-3000:]
    entries = record["outputs"]["5"]["images"]
    assert len(entries) == 5
    served = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(_view(server, e)))))
                          for e in entries]).float()

    monkeypatch.setattr(model_folders, "_models_dir_override", server.base / "models")
    io_folders.set_input_dir(server.base / "input")
    try:
        images = VideoDiTLoadVideo().load(**load)[0]
    finally:
        io_folders.set_input_dir(None)
    here_vae = VideoDiTVAELoader().load(**vae)[0]
    latent = VideoDiTVAEEncode().encode(here_vae, images)[0]
    decoded = VideoDiTVAEDecode().decode(here_vae, latent)[0]
    here = (decoded * 255).round()
    difference = (served[..., :3] - here).abs()
    # same nodes, same file, same input: identical up to float rounding between torch builds
    assert served.shape[:3] == here.shape[:3] == (5, 64, 64)
    assert float(difference.max()) <= 2 and float(difference.mean()) < 0.05, (
        float(difference.max()), float(difference.mean()))
    assert re.search(r"Requested to load VideoDiT_\w+", server.log())
    print(f"VAE round trip in ComfyUI vs standalone: max {float(difference.max()):.0f}, "
          f"mean {float(difference.mean()):.4f} levels of 255")


async def _run_collecting(server: ComfyUIServer, prompt: dict, timeout_s: float = 240):
    """Queue ``prompt`` and collect its JSON events and binary preview frames until it ends."""
    import aiohttp

    client_id = "videodit-preview-test"
    events, previews = [], []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as socket_:
            async with session.post(server.url + "/prompt",
                                    json={"prompt": prompt, "client_id": client_id}) as response:
                queued = await response.json()
            assert not queued.get("node_errors"), queued
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                message = await socket_.receive(timeout=deadline - time.monotonic())
                if message.type == aiohttp.WSMsgType.BINARY:
                    previews.append(message.data)
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(message.data)
                events.append((event["type"], event.get("data", {})))
                if event["type"] in ("execution_success", "execution_error",
                                     "execution_interrupted"):
                    return queued["prompt_id"], events, previews
    pytest.fail(f"prompt did not finish in {timeout_s} s; events: {events[-5:]}")


def test_text_to_video_prompt_with_progress_and_previews(server):
    """A whole tiny text-to-video graph of our nodes: per-step progress and live previews."""
    import asyncio
    import io
    import shutil
    import struct

    import torch
    from PIL import Image
    from safetensors.torch import save_file

    diffusers = pytest.importorskip("diffusers")
    wan_vae = pytest.importorskip("comfyui_videodit.networks.wan_vae")
    models = server.base / "models"
    torch.manual_seed(0)
    dit = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16,
        out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, eps=1e-6).eval()
    dit.save_pretrained(server.base / "dit_folder", safe_serialization=True)
    (models / "diffusion_models" / "videodit_tiny_dit").mkdir()
    shutil.copy(server.base / "dit_folder" / "diffusion_pytorch_model.safetensors",
                models / "diffusion_models" / "videodit_tiny_dit" / "model.safetensors")
    vae_file = models / "vae" / "videodit_t2v_vae.safetensors"
    network = wan_vae.WanVAE(wan_vae.WanVAEConfig("2.1", dim=8, decoder_dim=8, z_dim=16))
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, vae_file)
    encoder_name = "videodit_t2v_umt5.safetensors"
    _write_tiny_umt5(models / "text_encoders" / encoder_name)

    steps = 4
    prompt = {
        "1": {"class_type": "VideoDiTModelLoader",
              "inputs": {"model_name": "videodit_tiny_dit/model.safetensors", "weight_dtype": "fp32"}},
        "2": {"class_type": "VideoDiTTextEncoderLoader",
              "inputs": {"text_encoder_name": encoder_name, "dtype": "fp32", "device": "default"}},
        "3": {"class_type": "VideoDiTTextEncode",
              "inputs": {"text_encoder": ["2", 0], "negative": "blurry", "disk_cache": False,
                         "positive": "a red ball rolls to the left over a dark blue background"}},
        "4": {"class_type": "VideoDiTVAELoader",
              "inputs": {"vae_name": vae_file.name, "dtype": "fp32"}},
        "5": {"class_type": "VideoDiTEmptyLatent",
              "inputs": {"vae": ["4", 0], "width": 32, "height": 32, "length": 5, "batch_size": 1}},
        "6": {"class_type": "VideoDiTSampler",
              "inputs": {"model": ["1", 0], "conditioning": ["3", 0], "latent": ["5", 0],
                         "seed": 7, "steps": steps, "cfg": 3.0, "shift": 5.0,
                         "sampler": "euler", "denoise": 1.0}},
        "7": {"class_type": "VideoDiTVAEDecode",
              "inputs": {"vae": ["4", 0], "latent": ["6", 0], "tiled": False, "tile_size": 512,
                         "tile_overlap": 128}},
        "8": {"class_type": "VideoDiTSaveVideo",
              "inputs": {"images": ["7", 0], "fps": 16.0, "format": "png-sequence", "crf": 0,
                         "filename_prefix": "t2v/VideoDiT"}},
    }
    prompt_id, events, previews = asyncio.run(_run_collecting(server, prompt))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "execution_success", events[-3:]
    sampler_steps = [(d["value"], d["max"]) for k, d in events
                     if k == "progress" and d.get("node") == "6"]
    assert sampler_steps[-1] == (steps, steps) and len(sampler_steps) >= steps
    # one latent2rgb preview per step (the server runs with --preview-method auto): a JPEG of
    # the first latent frame (4x4 here), scaled by ComfyUI to fit --preview-size (512)
    assert len(previews) >= steps
    event_type, image_format = struct.unpack(">II", previews[-1][:8])
    assert event_type == 1 and image_format == 1  # UNENCODED_PREVIEW_IMAGE rendered as JPEG
    assert Image.open(io.BytesIO(previews[-1][8:])).size == (512, 512)
    record = _wait_for_history(server, prompt_id)
    frames = record["outputs"]["8"]["images"]
    assert len(frames) == 5
    assert Image.open(io.BytesIO(_view(server, frames[0]))).size == (32, 32)


def test_vace_inpaint_api_twin_takes_an_image_or_a_mask_as_control_mask(server):
    """control_mask is typed "MASK,IMAGE": ComfyUI's validation must accept both a mask video
    (IMAGE, as the example ships) and a MASK (ComfyUI's own Convert Image to Mask), and refuse
    anything else; the shipped API twin, shrunk, runs on a tiny VACE model."""
    import copy
    import urllib.error

    import torch

    from comfyui_videodit.media.encode import save_clip
    from tiny_models import write_text_encoder, write_vace_dit, write_vae

    models, inputs = server.base / "models", server.base / "input"
    write_vace_dit(models / "diffusion_models", "wan2.1_vace_1.3B_fp16.safetensors")
    write_vae(models / "vae", "wan_2.1_vae.safetensors", "2.1")
    write_text_encoder(models / "text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    ramp = torch.linspace(0, 1, 64)
    clip = torch.stack([ramp.roll(4 * t)[None, :, None].expand(64, 64, 3) for t in range(9)])
    save_clip(clip, 16.0, "mp4", 19, inputs, ["example_source_clip.mp4"])
    mask = torch.zeros(9, 64, 64, 3)
    mask[:, 16:48, 16:48] = 1.0
    save_clip(mask, 16.0, "mp4", 19, inputs, ["example_inpaint_mask.mp4"])

    shipped = json.loads((REPO_ROOT / "example_workflows" / "api" /
                          "vace_inpaint_wan21_1.3B.json").read_text(encoding="utf-8"))
    shipped["8"]["inputs"].update(width=64, height=64, length=9)
    shipped["6"]["inputs"]["frame_limit"] = shipped["7"]["inputs"]["frame_limit"] = 9
    shipped["9"]["inputs"]["steps"] = 2
    as_mask = copy.deepcopy(shipped)
    as_mask["12"] = {"class_type": "ImageToMask", "inputs": {"image": ["7", 0], "channel": "red"}}
    as_mask["8"]["inputs"]["control_mask"] = ["12", 0]
    for label, prompt in (("IMAGE", shipped), ("MASK", as_mask)):
        prompt["11"]["inputs"]["filename_prefix"] = f"vace_mask_{label}/VideoDiT"
        queued = _post_json(server.url + "/prompt", {"prompt": prompt})
        assert not queued.get("node_errors"), (label, queued)
        record = _wait_for_history(server, queued["prompt_id"])
        assert record["status"]["status_str"] == "success", (label, json.dumps(
            record["status"])[-3000:])
        saved = record["outputs"]["11"]["images"][0]
        assert saved["filename"].endswith(".mp4") and len(_view(server, saved)) > 1000, label

    wrong = copy.deepcopy(shipped)
    wrong["8"]["inputs"]["control_mask"] = ["8", 1]  # a LATENT
    with pytest.raises(urllib.error.HTTPError) as refused:
        _post_json(server.url + "/prompt", {"prompt": wrong})
    assert refused.value.code == 400
    assert "control_mask" in refused.value.read().decode()


def test_runtime_against_comfyuis_own_modules():
    """Memory manager, progress hook, interrupt flag and previews, in a ComfyUI process."""
    require_comfyui()
    done = subprocess.run(
        [COMFYUI_PYTHON, str(Path(__file__).with_name("comfyui_runtime_probe.py")), str(REPO_ROOT)],
        cwd=COMFYUI_DIR, capture_output=True, text=True, timeout=300, env=comfyui_env())
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE-RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(lines[-1][len("PROBE-RESULT "):])
    assert report["inside_comfyui"]

    memory = report["memory"]
    size = memory["size"]
    assert memory["native_loaded_first"] == size
    assert memory["ours_registered"] and memory["ours_loaded"] == size
    assert memory["native_after_ours"] == 0, "loading ours did not make ComfyUI free its model"
    assert memory["network_untouched"]
    assert memory["native_reloaded"] == size
    assert memory["ours_after_native"] == 0, "ComfyUI could not unload ours to make room"
    assert memory["ours_reloaded"] == size and memory["output_unchanged"]
    assert memory["nested_both_loaded"] == [size, size]
    assert memory["offload_after_unregisters"]
    assert memory["unload_all"] == [0, False]
    assert memory["after_unload_all"] == [size, True]

    progress = report["progress"]
    assert progress["events"] == [[1, 3, "42", None], [2, 3, "42", ["JPEG", [6, 4], 512]]]
    assert progress["interrupt"] == "InterruptProcessingException"
    assert progress["interrupt_flag_after"] is False

    previews = report["previews"]
    assert previews["enabled_with_none"] is False and previews["enabled_with_auto"] is True
    for name in ("wan21", "wan22"):
        assert previews[name]["shape"][0] == previews[name]["shape"][1] == [24, 40, 3]
        assert previews[name]["max_diff"] == 0, previews[name]
