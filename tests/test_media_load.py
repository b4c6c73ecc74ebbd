"""VideoDiT Load Video: frame selection, fps resampling, stills, sizes, memory budget, safety."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from comfyui_videodit.errors import InputError
from comfyui_videodit.media import decode
from comfyui_videodit.media.encode import save_clip
from comfyui_videodit.nodes.media import VideoDiTLoadVideo
from comfyui_videodit.runtime import io_folders

SOURCE_FRAMES, SOURCE_FPS = 30, 30.0


@pytest.fixture
def folders(tmp_path, monkeypatch):
    input_dir, output_dir = tmp_path / "input", tmp_path / "output"
    input_dir.mkdir()
    monkeypatch.setitem(io_folders._overrides, "input", input_dir)
    monkeypatch.setitem(io_folders._overrides, "output", output_dir)
    return input_dir, output_dir


@pytest.fixture
def numbered_clip(folders):
    """30 flat grey frames at 30 fps; frame i has level 4 + 8 i, so each frame names itself."""
    input_dir, output_dir = folders
    levels = (4 + 8 * torch.arange(SOURCE_FRAMES, dtype=torch.float32)) / 255
    images = levels[:, None, None, None].expand(SOURCE_FRAMES, 32, 48, 3).contiguous()
    output_dir.mkdir()
    saved = save_clip(images, SOURCE_FPS, "mp4", 0, output_dir, ["numbered_00001_.mp4"])
    os.link(saved.path, input_dir / "numbered.mp4")
    return "numbered.mp4"


def frame_ids(images: torch.Tensor) -> list[int]:
    levels = images.mean(dim=(1, 2, 3)) * 255
    ids = ((levels - 4) / 8).round().long().tolist()
    assert torch.allclose(levels, 4 + 8 * torch.tensor(ids, dtype=levels.dtype), atol=1.5)
    return ids


def load(name, **options):
    return VideoDiTLoadVideo().load(name, **options)


def test_whole_clip(numbered_clip):
    images, fps, count = load(numbered_clip)
    assert frame_ids(images) == list(range(30)) and count == 30 and fps == SOURCE_FPS
    assert images.dtype == torch.float32 and images.shape == (30, 32, 48, 3)


def test_skip_every_nth_and_limit(numbered_clip):
    images, fps, count = load(numbered_clip, skip_first_frames=3, every_nth=2, frame_limit=5)
    assert frame_ids(images) == [3, 5, 7, 9, 11] and count == 5
    assert fps == SOURCE_FPS / 2  # every_nth keeps the clip's speed


def test_limit_stops_decoding_early(numbered_clip, monkeypatch):
    converted = []
    real = decode._pyav_converter

    def counting(frame):
        to_rgb = real(frame)
        return lambda w, h: converted.append(frame.pts) or to_rgb(w, h)

    monkeypatch.setattr(decode, "_pyav_converter", counting)
    images, _, _ = load(numbered_clip, skip_first_frames=10, frame_limit=4)
    assert frame_ids(images) == [10, 11, 12, 13] and len(converted) == 4


@pytest.mark.parametrize("target", [20.0, 16.0, 60.0, 12.5])
def test_force_fps_picks_the_nearest_frame(numbered_clip, target):
    images, fps, count = load(numbered_clip, force_fps=target)
    expected_count = math.ceil(SOURCE_FRAMES * target / SOURCE_FPS)
    # output frame k stands at k/target; nearest source frame, ties to the later one
    expected = [min(SOURCE_FRAMES - 1, math.floor(k * SOURCE_FPS / target + 0.5))
                for k in range(expected_count)]
    assert frame_ids(images) == expected and count == expected_count and fps == target


def test_order_is_skip_then_fps_then_every_nth_then_limit(numbered_clip):
    images, fps, _ = load(numbered_clip, skip_first_frames=2, force_fps=15.0, every_nth=2,
                          frame_limit=4)
    assert frame_ids(images) == [2, 6, 10, 14] and fps == 7.5


def test_planned_count_matches_what_is_decoded(numbered_clip):
    for rng in (decode.FrameRange(), decode.FrameRange(5, 0, 3, 0.0),
                decode.FrameRange(1, 7, 1, 24.0), decode.FrameRange(0, 0, 4, 50.0)):
        path = io_folders.resolve_input(numbered_clip)
        clip = decode.load_clip(path, rng, decode.SizeRule(1, "none"))
        assert clip.images.shape[0] == rng.kept_count(SOURCE_FRAMES, SOURCE_FPS), rng


def test_loading_reports_progress_through_its_hooks(numbered_clip, folders):
    from comfyui_videodit.core.hooks import Hooks, SilentBar

    bars = []

    def progress(total, desc=""):
        bars.append((desc, SilentBar(total)))
        return bars[-1][1]

    input_dir, _ = folders
    decode.load_clip(input_dir / numbered_clip, decode.FrameRange(frame_limit=5),
                     hooks=Hooks(progress=progress))
    assert [(desc, bar.total, bar.value) for desc, bar in bars] == [
        (f"loading {numbered_clip}", 5, 5)]


def test_cancel_while_loading_is_a_cancel_not_a_damaged_file(numbered_clip, folders):
    """Cancel is raised by the progress bar inside the decode loop; it must reach the host as
    the interrupt it is (ComfyUI then shows "interrupted"), not as "cannot read <file>"."""
    from comfyui_videodit.core.hooks import Hooks, SilentBar
    from comfyui_videodit.errors import Interrupted

    class CancelAtThird(SilentBar):
        def update(self, n=1, preview=None):
            super().update(n, preview)
            if self.value == 3:
                raise Interrupted("cancelled by the user")

    input_dir, _ = folders
    with pytest.raises(Interrupted):
        decode.load_clip(input_dir / numbered_clip, decode.FrameRange(frame_limit=8),
                         hooks=Hooks(progress=CancelAtThird))


def test_skipping_everything_is_an_input_error(numbered_clip):
    with pytest.raises(InputError, match="skip_first_frames"):
        load(numbered_clip, skip_first_frames=100)


def write_still(input_dir, name, array, **save_options):
    from PIL import Image

    Image.fromarray(array).save(input_dir / name, **save_options)


def test_png_still_is_a_one_frame_clip_with_exact_pixels(folders):
    input_dir, _ = folders
    rgba = np.random.default_rng(0).integers(0, 256, (40, 56, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque (transparency is composited: tests/test_media_still_modes.py)
    write_still(input_dir, "still.png", rgba)
    images, fps, count = load("still.png")
    assert count == 1 and images.shape == (1, 32, 48, 3) and fps == decode.STILL_FPS
    # crop mode takes the centre: 40 -> 32 rows from row 4, 56 -> 48 columns from column 4
    expected = torch.from_numpy(rgba[4:36, 4:52, :3].astype(np.float32) / 255)
    assert torch.equal(images[0], expected)
    _, fps, count = load("still.png", force_fps=24.0)
    assert count == 1 and fps == 24.0  # forcing a rate never multiplies a still


def test_jpeg_still_follows_exif_orientation(folders):
    from PIL import Image

    input_dir, _ = folders
    array = np.zeros((32, 64, 3), dtype=np.uint8)
    array[:, :32] = 250  # bright left half
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    write_still(input_dir, "phone.jpg", array, exif=exif.tobytes(), quality=95)
    images, _, count = load("phone.jpg", size_mode="none")
    assert count == 1 and images.shape == (1, 64, 32, 3)
    assert images[0, :32].mean() > 0.9 and images[0, 32:].mean() < 0.1  # left became top


def test_size_modes(folders):
    input_dir, _ = folders
    array = np.random.default_rng(1).integers(0, 256, (70, 100, 3), dtype=np.uint8)
    write_still(input_dir, "frame.png", array)
    assert load("frame.png", size_mode="none")[0].shape == (1, 70, 100, 3)
    cropped = load("frame.png", size_multiple=16, size_mode="crop")[0]
    assert torch.equal(cropped[0], torch.from_numpy(array[3:67, 2:98].astype(np.float32) / 255))
    resized = load("frame.png", size_multiple=16, size_mode="resize")[0]
    assert resized.shape == (1, 64, 96, 3)  # 70 -> 64, 100 -> 96: the nearest multiples
    assert abs(resized.mean().item() - array.mean() / 255) < 0.01
    assert load("frame.png", size_multiple=32, size_mode="resize")[0].shape == (1, 64, 96, 3)
    with pytest.raises(InputError, match="size_multiple"):
        load("frame.png", size_multiple=128, size_mode="crop")


def test_video_resize_mode(numbered_clip):
    images, _, _ = load(numbered_clip, size_multiple=20, size_mode="resize", frame_limit=2)
    assert images.shape == (2, 40, 40, 3) and frame_ids(images) == [0, 1]


def test_budget_refuses_before_decoding(numbered_clip, monkeypatch):
    converted = []
    real = decode._pyav_converter
    monkeypatch.setattr(decode, "_pyav_converter",
                        lambda frame: (lambda w, h: converted.append(1) or real(frame)(w, h)))
    frame_bytes = 32 * 48 * 3 * 4
    with pytest.raises(InputError) as err:
        load(numbered_clip, max_memory_gb=10.5 * frame_bytes / 1024 ** 3)
    assert converted == []
    message = str(err.value)
    assert "frame_limit" in message and "30 frames of 48x32" in message
    assert "frame_limit to 10 or less" in message
    # what the message suggests works
    images, _, _ = load(numbered_clip, frame_limit=10, max_memory_gb=10.5 * frame_bytes / 1024 ** 3)
    assert images.shape[0] == 10


def test_budget_from_environment(numbered_clip, monkeypatch):
    monkeypatch.setenv(decode.MAX_DECODE_GB_ENV, "0.00001")
    with pytest.raises(InputError, match=decode.MAX_DECODE_GB_ENV):
        load(numbered_clip)
    monkeypatch.setenv(decode.MAX_DECODE_GB_ENV, "lots")
    with pytest.raises(InputError, match="not a number"):
        load(numbered_clip)


def test_budget_holds_when_the_header_has_no_frame_count(numbered_clip, monkeypatch):
    real_open = decode._open_with_pyav
    converted = []

    def without_count(path):
        source = real_open(path)
        source.frame_count = None
        inner = source.frames
        source.frames = (converted.append(1) or frame for frame in inner)
        return source

    monkeypatch.setattr(decode, "_open_with_pyav", without_count)
    frame_bytes = 32 * 48 * 3 * 4
    with pytest.raises(InputError, match="more frames than its header said"):
        load(numbered_clip, max_memory_gb=3.5 * frame_bytes / 1024 ** 3)
    assert len(converted) == 4  # three kept, the fourth refused before it was converted


@pytest.mark.parametrize("name", ["../outside.mp4", "/etc/passwd", "a/../../outside.mp4",
                                  "C:/Windows/x.mp4", "..\\outside.mp4", ""])
def test_paths_stay_inside_the_input_folder(folders, name):
    input_dir, _ = folders
    (input_dir.parent / "outside.mp4").write_bytes(b"not for you")
    with pytest.raises(InputError) as err:
        load(name)
    assert err.value.input == "video"
    assert isinstance(VideoDiTLoadVideo.VALIDATE_INPUTS(name), str)


def test_symlink_out_of_the_input_folder_is_refused(numbered_clip, folders, tmp_path):
    input_dir, _ = folders
    secret = tmp_path / "secret.mp4"
    os.link(input_dir / numbered_clip, secret)
    (input_dir / "link.mp4").symlink_to(secret)
    with pytest.raises(InputError, match="outside the input folder"):
        load("link.mp4")


def test_annotated_names_read_from_the_output_folder(numbered_clip):
    images, _, _ = load("numbered_00001_.mp4 [output]", frame_limit=1)
    assert frame_ids(images) == [0]


@pytest.mark.parametrize("name,content,expected", [
    ("noise.mp4", os.urandom(4000), "cannot read noise.mp4"),
    ("empty.webm", b"", "cannot read empty.webm"),
    ("noise.png", os.urandom(4000), "cannot read noise.png"),
    ("notes.txt", b"hello", "not a supported video or image"),
])
def test_unreadable_files_are_input_errors(folders, name, content, expected):
    input_dir, _ = folders
    (input_dir / name).write_bytes(content)
    with pytest.raises(InputError) as err:
        load(name)
    assert expected in str(err.value) and "Fix:" in str(err.value)
    assert str(err.value).startswith("VideoDiT Load Video · video:")


def test_truncated_video_is_reported(numbered_clip, folders):
    input_dir, _ = folders
    data = (input_dir / numbered_clip).read_bytes()
    (input_dir / "cut.mp4").write_bytes(data[:int(len(data) * 0.8)])
    with pytest.raises(InputError, match="truncated|cannot read"):
        load("cut.mp4")


def test_missing_file_and_validation(numbered_clip):
    assert VideoDiTLoadVideo.VALIDATE_INPUTS(numbered_clip) is True
    assert "not found" in VideoDiTLoadVideo.VALIDATE_INPUTS("nope.mp4")


def test_is_changed_follows_the_file(numbered_clip, folders):
    input_dir, _ = folders
    before = VideoDiTLoadVideo.IS_CHANGED(numbered_clip, frame_limit=3)
    assert VideoDiTLoadVideo.IS_CHANGED(numbered_clip) == before
    path = input_dir / numbered_clip
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10 ** 9))
    assert VideoDiTLoadVideo.IS_CHANGED(numbered_clip) != before


def test_file_list_shows_videos_and_images_only(folders):
    input_dir, _ = folders
    for name in ("b.mp4", "a.PNG", "c.webm", "d.txt", ".hidden.mp4", "e.gif"):
        (input_dir / name).write_bytes(b"x")
    (input_dir / "sub").mkdir()
    options = VideoDiTLoadVideo.INPUT_TYPES()["required"]["video"]
    # the input folder's media, then the demo workflows' shipped inputs under their prefix
    assert options[0][:4] == ["a.PNG", "b.mp4", "c.webm", "e.gif"]
    assert all(name.startswith("videodit-demo/") for name in options[0][4:])
    assert options[1]["video_upload"] is True
