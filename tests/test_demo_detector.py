"""The demo detector's shape names and its colour judgement on the first and last frames."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from comfyui_videodit.demo import clips, detector
from comfyui_videodit.demo import evaluate as ev
from comfyui_videodit.demo.palette import BACKGROUND_COLOURS, OBJECT_COLOURS


pytestmark = pytest.mark.usefixtures("one_thread")


def _one_object(shape: str, motion: str = "still", *, size: float = 6.0, colour: str = "orange",
                background: str = "dark blue", gradient: bool = False,
                start=(32.0, 32.0), speed: str = "slow") -> clips.ClipSpec:
    obj = clips.ObjectSpec(colour, shape, motion, speed, size, start)
    return clips.ClipSpec(background, gradient, (obj,))


def _blur(video: torch.Tensor) -> torch.Tensor:
    """One pass of a 3x3 binomial blur (sigma about 0.7 px): a soft generated edge."""
    x = video.permute(0, 3, 1, 2)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3
                    ).permute(0, 2, 3, 1)


# The smallest and largest sizes clips draw (a growing object starts at 5 / sqrt(2.2) = 3.4),
# moving, bouncing and growing, on plain and gradient backgrounds of every kind of brightness.
CASES = [
    dict(motion="still", size=5.0),
    dict(motion="still", size=7.0, background="white", gradient=True, colour="yellow"),
    dict(motion="grow", size=3.4, speed="fast", background="black", colour="blue"),
    dict(motion="down-right", size=5.5, speed="fast", start=(20.0, 18.0), background="gray",
         gradient=True, colour="pink"),
    dict(motion="bounce", size=6.0, start=(40.0, 44.0), background="brown", colour="cyan"),
]


@pytest.mark.parametrize("shape", clips.SHAPES)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_each_shape_is_named_on_rendered_clips(shape, case):
    spec = _one_object(shape, **CASES[case])
    found = detector.detect(clips.render(spec))
    (track,) = found.objects
    assert (track.colour, track.shape) == (spec.objects[0].colour, shape), track.shape_features
    # a drawn outline is anti-aliased over at most one pixel
    assert track.shape_features[2] <= 5.0, track.shape_features
    # and a slightly soft one still reads the same
    assert detector.detect(_blur(clips.render(spec))).objects[0].shape == shape


def test_shapes_of_sampled_clips_of_both_splits():
    """Sampled clips, with one or two objects, in every combination the sampler draws."""
    for split, seeds in (("train", range(20)), ("eval", range(20))):
        for seed in seeds:
            clip = clips.make_clip(seed, split)
            found = detector.detect(clip.video)
            named = {o.colour: o.shape for o in found.objects}
            assert named == {o.colour: o.shape for o in clip.spec.objects}, (split, seed,
                                                                             clip.caption)


def test_shape_features_match_the_shapes_moments():
    """On large shapes the features reach the values shape_features() derives: y skewness
    -0.57 for the triangle, corner contrast -0.6 for the square and +0.6 for the diamond."""
    expected = {"circle": (0.0, 0.0), "square": (0.0, -0.6), "diamond": (0.0, 0.6),
                "triangle": (-0.566, 0.0)}
    for shape, (skew, contrast) in expected.items():
        video = clips.render(_one_object(shape, size=20.0, background="black"))
        features = detector.detect(video).objects[0].shape_features
        assert features[0] == pytest.approx(skew, abs=0.04), shape
        assert features[1] == pytest.approx(contrast, abs=0.06), shape
    assert detector.name_shape(-0.3, 0.0) == "triangle"
    assert detector.name_shape(0.3, 0.0) == "circle"  # triangles here point up


def _colour_change(first: str, then: str, at: int) -> tuple[clips.ClipSpec, torch.Tensor]:
    """A circle moving right that is ``first`` until frame ``at`` and ``then`` afterwards."""
    spec = _one_object("circle", "right", start=(16.0, 32.0), colour=first, background="gray")
    changed = replace(spec, objects=(replace(spec.objects[0], colour=then),))
    return spec, torch.cat([clips.render(spec)[:at], clips.render(changed)[at:]])


def test_colour_judged_on_the_last_frames_catches_a_colour_change():
    spec, video = _colour_change("red", "blue", at=9)
    found = detector.detect(video)
    # over the whole clip, red covers more frames and is the only object colour that counts
    # (blue is there in fewer than half the frames): a whole-clip judgement calls this right
    assert [o.colour for o in found.objects] == ["red"] and found.objects[0].motion == "right"
    assert (found.first_colour, found.last_colour) == ("red", "blue")
    score = ev.score_text_to_video(spec, video)
    assert score.colour_whole_clip and score.colour_first
    assert not score.colour_last and not score.colour
    # the same clip without the change is right
    assert ev.score_text_to_video(spec, clips.render(spec)).colour


def test_edge_colour_ignores_a_fringe_and_needs_an_object():
    # a cyan square (about 5x5 pixels) framed by two-pixel bars of green, as a soft generated
    # edge can have: the bars cover more pixels but none of them is solid
    video = clips.render(_one_object("square", size=3.0, colour="cyan",
                                     background="dark green")).clone()
    ring = torch.zeros(64, 64, dtype=torch.bool)
    ring[27:29, 29:35] = ring[35:37, 29:35] = True  # above and below
    ring[29:35, 27:29] = ring[29:35, 35:37] = True  # left and right
    video[:, ring] = torch.tensor(OBJECT_COLOURS["green"]) / 255
    found = detector.detect(video)
    assert [o.colour for o in found.objects] == ["cyan"]
    assert found.first_colour == found.last_colour == "cyan"
    empty = torch.empty(17, 64, 64, 3)
    empty[:] = torch.tensor(BACKGROUND_COLOURS["white"]) / 255
    found = detector.detect(empty)
    assert (found.objects, found.first_colour, found.last_colour) == ((), None, None)


def test_a_blob_without_an_outline_has_no_shape():
    """A shape blurred until its outline is gone is not read as a circle."""
    spec = clips.ClipSpec("white", False, (clips.ObjectSpec("red", "square", "still", "slow", 9.0,
                                                            (32.0, 32.0)),))
    video = clips.render(spec)
    for _ in range(6):
        video = _blur(video)
    track = detector.detect(video).objects[0]
    assert track.colour == "red"
    assert track.shape is None and track.shape_features[2] > detector.SOFT_OUTLINE
