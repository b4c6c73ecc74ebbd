"""Stills in the modes cameras and editors write: 16-bit grayscale at full range, alpha
composited over white (the Load Video node's tooltip says so)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from comfyui_videodit.nodes.media import VideoDiTLoadVideo
from comfyui_videodit.runtime import io_folders


@pytest.fixture
def input_dir(tmp_path, monkeypatch):
    folder = tmp_path / "input"
    folder.mkdir()
    monkeypatch.setitem(io_folders._overrides, "input", folder)
    return folder


def load(name):
    return VideoDiTLoadVideo().load(name, size_multiple=1, size_mode="none")[0]


def test_a_16_bit_grayscale_png_is_read_at_full_range(input_dir):
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    Image.fromarray(ramp).save(input_dir / "depth16.png")
    assert Image.open(input_dir / "depth16.png").mode.startswith("I")
    images = load("depth16.png")
    assert images.shape == (1, 32, 64, 3)
    expected = ramp.astype(np.float64) / 65535.0
    assert np.abs(images[0, ..., 0].numpy() - expected).max() <= 1 / 255
    assert float(images.mean()) == pytest.approx(0.5, abs=0.01)  # not nearly white
    assert (images[0, ..., 0] == images[0, ..., 2]).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_composited_over_white(input_dir, mode):
    pixels = np.zeros((16, 16, 4), dtype=np.uint8)
    pixels[..., 0] = 200                 # red hidden under full transparency on the left
    pixels[:, 8:] = (0, 0, 255, 255)     # opaque blue on the right
    pixels[:8, :8, 3] = 0
    pixels[8:, :8] = (0, 0, 0, 128)      # half-transparent black
    image = Image.fromarray(pixels, "RGBA")
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "P":
        pixels[8:, :8] = (0, 0, 0, 0)
        image = Image.fromarray(pixels, "RGBA").quantize(method=Image.Quantize.FASTOCTREE)
    image.save(input_dir / f"cutout_{mode}.png")
    frame = load(f"cutout_{mode}.png")[0].numpy()
    assert np.allclose(frame[0, 0], 1.0)                                   # transparent: white
    if mode == "RGBA":
        assert np.allclose(frame[0, 15], (0, 0, 1.0))                      # opaque: unchanged
        assert np.allclose(frame[15, 0], 127 / 255, atol=1 / 255)          # half: blended
    tooltip = VideoDiTLoadVideo.INPUT_TYPES()["required"]["video"][1]["tooltip"]
    assert "transparent" in tooltip.lower() and "white" in tooltip.lower()
