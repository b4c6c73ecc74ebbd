"""Save with VideoDiT Save Video, load with VideoDiT Load Video: frames, fps, pixels, metadata."""
from __future__ import annotations

import json
import os

import pytest
import torch

from comfyui_videodit.errors import InputError
from comfyui_videodit.media import encode, metadata, publish
from comfyui_videodit.nodes.media import VideoDiTLoadVideo, VideoDiTSaveVideo
from comfyui_videodit.runtime import io_folders

PROMPT = {"3": {"class_type": "VideoDiTSampler", "inputs": {"seed": 7, "text": "a red fox"}}}
WORKFLOW = {"version": 0.4, "nodes": [{"id": 3, "type": "VideoDiTSampler"}], "links": []}


@pytest.fixture
def folders(tmp_path, monkeypatch):
    input_dir, output_dir = tmp_path / "input", tmp_path / "output"
    input_dir.mkdir()
    monkeypatch.setitem(io_folders._overrides, "input", input_dir)
    monkeypatch.setitem(io_folders._overrides, "output", output_dir)
    return input_dir, output_dir


def smooth_clip(frames=10, height=64, width=96) -> torch.Tensor:
    """Gradients and a slowly moving soft blob: what codecs are built for."""
    t = torch.arange(frames, dtype=torch.float32)[:, None, None]
    y = torch.linspace(0, 1, height)[None, :, None]
    x = torch.linspace(0, 1, width)[None, None, :]
    blob = torch.exp(-((x - 0.3 - 0.03 * t) ** 2 + (y - 0.5) ** 2) / 0.02)
    red = 0.15 + 0.6 * x + 0.2 * blob
    green = 0.2 + 0.5 * y + 0.02 * t
    blue = 0.7 - 0.4 * x * y + 0.25 * blob
    return torch.stack([red, green.expand_as(red), blue], dim=-1).clamp(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def save(images, fmt, crf=10, prefix="clip", fps=16.0):
    return VideoDiTSaveVideo().save(images, fps, fmt, crf, prefix, prompt=PROMPT,
                                    extra_pnginfo={"workflow": WORKFLOW})


def load_saved(result, input_dir, **options):
    """Make the saved file loadable by name (a hard link into the input folder) and load it."""
    path = result["result"][0]
    name = os.path.basename(path)
    os.link(path, input_dir / name)
    options.setdefault("size_mode", "none")
    return VideoDiTLoadVideo().load(name, **options)


# format, crf, PSNR bound (dB) measured on smooth_clip, with margin
@pytest.mark.parametrize("fmt,crf,min_psnr", [
    ("mp4", 10, 40.0),     # H.264 yuv420p: chroma subsampling dominates the error
    ("webm", 10, 38.0),    # VP9 crf 12
    ("webp", 10, 35.0),    # lossy WebP quality 90, yuv420p
    ("webp", 0, 100.0),    # lossless WebP: exact
    ("gif", 19, 30.0),     # 256 colours per frame, dithered
])
def test_round_trip_keeps_frames_fps_and_pixels(folders, fmt, crf, min_psnr):
    input_dir, output_dir = folders
    clip = smooth_clip()
    result = save(clip, fmt, crf)
    images, fps, count = load_saved(result, input_dir)
    assert count == clip.shape[0] and images.shape == clip.shape
    assert fps == pytest.approx(16.0)
    quality = psnr(images, clip)
    # Quantisation to 8 bits alone gives ~59 dB; "exact" means equal to the 8-bit frames.
    if min_psnr >= 100:
        assert torch.equal(images, clip.mul(255).round().div(255))
    else:
        assert quality >= min_psnr, f"{fmt} crf {crf}: {quality:.1f} dB"
    assert result["ui"]["animated"] == (True,)
    entry = result["ui"]["images"][0]
    assert entry["type"] == "output" and entry["subfolder"] == ""
    assert (output_dir / entry["filename"]).is_file()


def test_png_sequence_is_exact_and_carries_the_graph_in_every_frame(folders):
    _, output_dir = folders
    clip = smooth_clip(frames=4)
    result = save(clip, "png-sequence")
    folder = output_dir / "clip_00001_"
    assert result["result"][0] == str(folder)
    entries = result["ui"]["images"]
    assert [e["filename"] for e in entries] == [f"frame_{i:05}.png" for i in range(1, 5)]
    assert {e["subfolder"] for e in entries} == {"clip_00001_"}
    assert result["ui"]["animated"] == (False,)
    from PIL import Image
    import numpy as np

    for index, entry in enumerate(entries):
        path = folder / entry["filename"]
        pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).float() / 255
        assert torch.equal(pixels, clip[index].mul(255).round().div(255))
        text = metadata.read_png_text(path)
        assert json.loads(text["prompt"]) == PROMPT and json.loads(text["workflow"]) == WORKFLOW


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_container_tags_hold_prompt_and_workflow(folders, fmt):
    result = save(smooth_clip(frames=3), fmt)
    tags = metadata.read_container_tags(result["result"][0])
    assert json.loads(tags["prompt"]) == PROMPT
    assert json.loads(tags["workflow"]) == WORKFLOW


def test_webp_exif_holds_prompt_and_workflow_like_comfyui(folders):
    result = save(smooth_clip(frames=3), "webp")
    path = result["result"][0]
    tags = metadata.read_webp_exif_tags(path)
    assert json.loads(tags["prompt"]) == PROMPT and json.loads(tags["workflow"]) == WORKFLOW
    # Pillow (as ComfyUI's loaders use it) still reads the file and finds the same EXIF.
    from PIL import Image

    with Image.open(path) as image:
        assert image.n_frames == 3
        exif = image.getexif()
        assert exif[0x0110] == "prompt:" + json.dumps(PROMPT)
        assert exif[0x010F] == "workflow:" + json.dumps(WORKFLOW)


def test_no_metadata_without_hidden_inputs(folders):
    result = VideoDiTSaveVideo().save(smooth_clip(frames=2), 16.0, "mp4", 19, "bare")
    tags = metadata.read_container_tags(result["result"][0])
    assert "prompt" not in tags and "workflow" not in tags


def test_never_overwrites_and_counter_continues_past_existing_files(folders):
    _, output_dir = folders
    (output_dir / "shots").mkdir(parents=True)
    stale = output_dir / "shots" / "take_00007_.mp4"
    stale.write_bytes(b"someone's earlier render")
    (output_dir / "shots" / "takeover_00020_.mp4").write_bytes(b"other prefix")
    clip = smooth_clip(frames=2)
    first = save(clip, "mp4", prefix="shots/take")
    second = save(clip, "gif", prefix="shots/take")
    third = save(clip, "png-sequence", prefix="shots/take")
    assert first["ui"]["images"][0] == {"filename": "take_00008_.mp4", "subfolder": "shots",
                                        "type": "output"}
    assert second["ui"]["images"][0]["filename"] == "take_00009_.gif"
    assert third["ui"]["images"][0]["subfolder"] == "shots/take_00010_"
    assert stale.read_bytes() == b"someone's earlier render"
    assert not [p for p in (output_dir / "shots").iterdir() if p.name.startswith(".")]


def test_publish_skips_a_name_taken_while_encoding(folders):
    _, output_dir = folders
    name = io_folders.reserve_output_name("race", ".mp4")
    name.path.write_bytes(b"written by another process meanwhile")
    temporary = output_dir / ".race.partial"
    temporary.write_bytes(b"ours")
    final = publish.publish(temporary, name.folder, name.filenames())
    assert final.name == "race_00002_.mp4" and final.read_bytes() == b"ours"
    assert name.path.read_bytes() == b"written by another process meanwhile"
    assert not temporary.exists()


def test_a_save_skips_a_name_taken_while_encoding(folders, monkeypatch):
    """The node reserves race_00001_; another process takes it before the encode finishes."""
    _, output_dir = folders
    real_encode = encode._ENCODERS["gif"]

    def encode_while_another_process_saves(images, path, *rest):
        (output_dir / "race_00001_.gif").write_bytes(b"theirs")
        return real_encode(images, path, *rest)

    monkeypatch.setitem(encode._ENCODERS, "gif", encode_while_another_process_saves)
    result = save(smooth_clip(frames=2), "gif", prefix="race")
    assert result["ui"]["images"][0]["filename"] == "race_00002_.gif"
    assert (output_dir / "race_00001_.gif").read_bytes() == b"theirs"
    assert sorted(p.name for p in output_dir.iterdir()) == ["race_00001_.gif", "race_00002_.gif"]


def test_claim_folder_never_reuses_an_existing_one(tmp_path):
    (tmp_path / "seq_00001_").mkdir()
    (tmp_path / "seq_00002_").write_bytes(b"a file of that name")
    claimed = publish.claim_folder(tmp_path, ["seq_00001_", "seq_00002_", "seq_00003_"])
    assert claimed == tmp_path / "seq_00003_" and not any(claimed.iterdir())
    with pytest.raises(FileExistsError):
        publish.claim_folder(tmp_path, ["seq_00001_", "seq_00003_"])


def test_save_clip_writes_where_it_is_told_without_the_host(tmp_path):
    """The library alone: a folder and names in, no ComfyUI, no output-folder lookup."""
    clip = smooth_clip(frames=3)
    (tmp_path / "taken.webm").write_bytes(b"keep me")
    saved = encode.save_clip(clip, 16.0, "webm", 10, tmp_path, ["taken.webm", "free.webm"],
                             {"prompt": json.dumps(PROMPT)})
    assert saved.path == tmp_path / "free.webm" and saved.files == ["free.webm"]
    assert (tmp_path / "taken.webm").read_bytes() == b"keep me"
    assert json.loads(metadata.read_container_tags(saved.path)["prompt"]) == PROMPT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["free.webm", "taken.webm"]


def test_save_reports_progress_through_its_hooks(tmp_path):
    from comfyui_videodit.core.hooks import Hooks, SilentBar

    bars = []

    def progress(total, desc=""):
        bars.append((desc, SilentBar(total)))
        return bars[-1][1]

    encode.save_clip(smooth_clip(frames=4), 16.0, "gif", 19, tmp_path, ["c.gif"],
                     hooks=Hooks(progress=progress))
    assert [(desc, bar.total, bar.value) for desc, bar in bars] == [("saving gif", 4, 4)]


def test_a_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_encoder(images, path, *rest):
        path.write_bytes(b"half a file")
        raise RuntimeError("encoder crashed")

    monkeypatch.setitem(encode._ENCODERS, "mp4", broken_encoder)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        encode.save_clip(smooth_clip(frames=2), 16.0, "mp4", 19, tmp_path, ["clip.mp4"])
    assert list(tmp_path.iterdir()) == []


def test_prefix_cannot_escape_the_output_folder(folders):
    for prefix in ("../evil", "/tmp/evil", "a/../../evil"):
        with pytest.raises(InputError, match="filename_prefix"):
            save(smooth_clip(frames=1), "gif", prefix=prefix)


def test_odd_size_mp4_is_padded_by_one_edge_pixel(folders):
    input_dir, _ = folders
    clip = smooth_clip(frames=3, height=33, width=47)
    result = save(clip, "mp4", crf=4)
    images, _, count = load_saved(result, input_dir)
    assert count == 3 and images.shape == (3, 34, 48, 3)
    assert psnr(images[:, :33, :47], clip) >= 40
    # the added row and column repeat their neighbours (within codec error)
    assert (images[:, 33, :47] - images[:, 32, :47]).abs().mean() < 0.02
    assert (images[:, :33, 47] - images[:, :33, 46]).abs().mean() < 0.02


@pytest.mark.parametrize("fmt", ["webm", "gif", "webp"])
def test_odd_size_other_formats_keep_their_size(folders, fmt):
    input_dir, _ = folders
    clip = smooth_clip(frames=2, height=33, width=47)
    images, _, _ = load_saved(save(clip, fmt), input_dir)
    assert images.shape == clip.shape


def test_fps_round_trips_for_common_rates(folders):
    input_dir, _ = folders
    clip = smooth_clip(frames=6, height=32, width=32)
    for fps in (24.0, 30.0, 23.976):
        result = save(clip, "mp4", fps=fps, prefix=f"rate{fps}")
        _, loaded_fps, _ = load_saved(result, input_dir)
        assert loaded_fps == pytest.approx(fps, abs=1e-3)


def test_missing_encoder_is_reported_with_an_alternative(monkeypatch):
    import av

    real = av.codec.Codec

    def without_x264(name, mode="r"):
        if name == "libx264":
            raise av.codec.codec.UnknownCodecError(name)
        return real(name, mode)

    monkeypatch.setattr(av.codec, "Codec", without_x264)
    with pytest.raises(InputError) as err:
        encode.require_encoder("mp4")
    assert "libx264" in str(err.value) and "webm" in str(err.value)


@pytest.mark.parametrize("bad,what", [
    (torch.zeros(0, 8, 8, 3), "images"),
    (torch.zeros(8, 8), "images"),
])
def test_bad_images_are_refused(folders, bad, what):
    with pytest.raises(InputError, match=what):
        save(bad, "mp4")


def test_comfyui_disable_metadata_is_honoured(folders, monkeypatch):
    """ComfyUI's ``--disable-metadata`` (``comfy.cli_args.args``) turns the tags off."""
    from types import SimpleNamespace

    from comfyui_videodit.runtime import saved_metadata

    fake_cli_args = SimpleNamespace(args=SimpleNamespace(disable_metadata=True))
    monkeypatch.setattr(saved_metadata, "comfy_module",
                        lambda name: fake_cli_args if name == "comfy.cli_args" else None)
    result = save(smooth_clip(frames=2), "mp4")
    tags = metadata.read_container_tags(result["result"][0])
    assert "prompt" not in tags and "workflow" not in tags
