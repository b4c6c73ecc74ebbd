"""Latent -> RGB previews: the per-channel colours, frame choice and format checks."""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.core import latent_preview as previews
from comfyui_videodit.core.latent_formats import FORMATS, WAN21


def _expected_byte(value: float) -> int:
    # ComfyUI's conversion: -1..1 -> 0..1, clamp, times 255, truncated to a byte
    return int(min(max((value + 1.0) / 2.0, 0.0), 1.0) * 255)


@pytest.mark.parametrize("name,channels", [("wan21", 16), ("wan22", 48)])
def test_each_channel_adds_its_own_colour(name, channels):
    factors, bias = FORMATS[name].rgb_factors, FORMATS[name].rgb_bias
    assert len(factors) == channels and all(len(row) == 3 for row in factors)
    x0 = torch.zeros(1, channels, 1, channels, 1)
    for c in range(channels):
        x0[0, c, 0, c, 0] = 2.0  # row c of the picture lights channel c only
    rgb = previews.latent_to_rgb(x0, name)
    assert rgb.shape == (1, channels, 1, 3)
    for c in range(channels):
        expected = [(2.0 * factors[c][k] + bias[k] + 1.0) / 2.0 for k in range(3)]
        assert rgb[0, c, 0].tolist() == pytest.approx([min(max(e, 0), 1) for e in expected], abs=1e-6)
    image = previews.rgb_strip_image(rgb)
    assert image.mode == "RGB" and image.size == (1, channels)
    for c in range(channels):
        assert image.getpixel((0, c)) == tuple(_expected_byte(2.0 * factors[c][k] + bias[k])
                                              for k in range(3))


def test_known_values_wan21():
    # a zero latent shows the bias colour; channel 0 at +1 adds (-0.1299, -0.1692, 0.2932)
    x0 = torch.zeros(1, 16, 1, 1, 2)
    x0[0, 0, 0, 0, 1] = 1.0
    image = previews.rgb_strip_image(previews.latent_to_rgb(x0, WAN21))
    assert image.getpixel((0, 0)) == (104, 116, 84)
    assert image.getpixel((1, 0)) == (87, 94, 122)


def test_frames_are_spread_from_first_to_last():
    x0 = torch.zeros(2, 16, 9, 2, 3)
    for t in range(9):
        x0[0, :, t] = (t - 4) / 2.0  # each latent frame has its own brightness
    x0[1] = 100.0  # batch items after the first are ignored
    strip = previews.latent_to_rgb(x0, "wan21", frames=3)
    single = [previews.latent_to_rgb(x0[:, :, t:t + 1], "wan21")[0] for t in (0, 4, 8)]
    assert torch.equal(strip, torch.stack(single))
    assert previews.latent_to_rgb(x0, "wan21", frames=50).shape[0] == 9
    assert previews.rgb_strip_image(strip).size == (9, 2)


def test_format_is_inferred_or_checked():
    assert previews.preview_format(None, 48).name == "wan22"
    assert previews.preview_format(WAN21, 16).name == "wan21"
    with pytest.raises(ValueError, match="wan22 has 48 channels, the latent has 16"):
        previews.latent_to_rgb(torch.zeros(1, 16, 1, 2, 2), "wan22")
    with pytest.raises(ValueError, match="no preview colours"):
        previews.latent_to_rgb(torch.zeros(1, 4, 1, 2, 2))
    with pytest.raises(ValueError, match="5-D"):
        previews.latent_to_rgb(torch.zeros(16, 2, 2), "wan21")
