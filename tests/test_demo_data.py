"""The procedural demo clips, their captions, the held-out split, and the detector that scores them."""
from __future__ import annotations

import itertools
import math
import random

import pytest
import torch
import torch.nn.functional as F

from comfyui_videodit.demo import captions, clips, detector
from comfyui_videodit.demo.palette import (ALL_COLOURS, BACKGROUND_COLOURS, GRADIENT_SPREAD,
                                          OBJECT_COLOURS)


pytestmark = pytest.mark.usefixtures("one_thread")


def _detection_errors(clip: clips.Clip, found: detector.Detection) -> list[str]:
    errors = []
    if found.background != clip.spec.background:
        errors.append(f"background {found.background} != {clip.spec.background}")
    if len(found.objects) != len(clip.spec.objects):
        errors.append(f"{len(found.objects)} objects found, {len(clip.spec.objects)} drawn")
    for obj in clip.spec.objects:
        track = found.object(obj.colour)
        if track is None:
            errors.append(f"{obj.colour} object not found")
        elif track.motion != obj.motion:
            errors.append(f"{obj.colour}: motion {track.motion} != {obj.motion}")
        elif track.speed is not None and track.speed != obj.speed:
            errors.append(f"{obj.colour}: speed {track.speed} != {obj.speed}")
    return errors


def _accuracy(seeds, split, degrade=None) -> tuple[float, list[str]]:
    failures = []
    for seed in seeds:
        clip = clips.make_clip(seed, split)
        video = clip.video if degrade is None else degrade(clip.video, seed)
        errors = _detection_errors(clip, detector.detect(video))
        if errors:
            failures.append(f"seed {seed} ({clip.caption}): {'; '.join(errors)}")
    return 1 - len(failures) / len(seeds), failures


def test_clip_format_and_determinism():
    clip = clips.make_clip(7)
    assert clip.video.shape == (17, 64, 64, 3) and clip.video.dtype == torch.float32
    assert 0.0 <= float(clip.video.min()) and float(clip.video.max()) <= 1.0
    assert (clip.spec.frames, clip.spec.height, clip.spec.width, clip.spec.fps) == (17, 64, 64, 16)
    again = clips.make_clip(7)
    assert again.caption == clip.caption and again.spec == clip.spec
    assert torch.equal(again.video, clip.video)
    assert not torch.equal(clips.make_clip(8).video, clip.video)


def test_palette_colours_are_far_apart():
    # a gradient moves a background colour by up to GRADIENT_SPREAD per channel; named colours
    # more than twice that apart never swap their nearest name
    reach = GRADIENT_SPREAD * math.sqrt(3)
    for (a, ca), (b, cb) in itertools.combinations(ALL_COLOURS.items(), 2):
        assert math.dist(ca, cb) > 2 * reach, (a, b)
    assert not set(OBJECT_COLOURS) & set(BACKGROUND_COLOURS)


def test_objects_stay_inside_the_frame_and_apart():
    rng = random.Random(0)
    for _ in range(300):
        spec = clips.sample_spec(rng, "train")
        for t in range(spec.frames):
            boxes = []
            for obj in spec.objects:
                (x, y), r = obj.centre(t, spec.frames), obj.half_size(t, spec.frames)
                assert r <= x <= spec.width - r and r <= y <= spec.height - r, obj
                boxes.append((y - r * 1.26, y + r * 1.26))  # 1.26: the diamond's reach
            if len(boxes) == 2:
                (top_a, bottom_a), (top_b, bottom_b) = sorted(boxes)
                assert bottom_a < top_b  # the two objects never overlap


def test_held_out_combinations_never_train():
    held = set(clips.held_out_combinations())
    everything = set(itertools.product(OBJECT_COLOURS, clips.SHAPES, clips.MOTIONS))
    assert 0.05 < len(held) / len(everything) < 0.2
    trainable = everything - held
    # every colour, shape and motion is still seen in training, only the combination is new
    for position, values in enumerate((OBJECT_COLOURS, clips.SHAPES, clips.MOTIONS)):
        assert {combo[position] for combo in trainable} == set(values)
    rng = random.Random(1)
    for _ in range(400):
        for obj in clips.sample_spec(rng, "train").objects:
            assert (obj.colour, obj.shape, obj.motion) not in held
    for _ in range(100):
        (obj,) = clips.sample_spec(rng, "eval").objects
        assert (obj.colour, obj.shape, obj.motion) in held


def test_captions_name_colours_and_vary_words():
    rng = random.Random(3)
    circle_words, still_phrases = set(), set()
    for seed in range(300):
        spec = clips.sample_spec(random.Random(seed))
        text = captions.caption(spec, random.Random(seed))
        assert text.startswith(("a ", "an "))
        assert spec.background in text
        for obj in spec.objects:
            assert f" {obj.colour} " in text
            nouns = [w for w in captions.SHAPE_WORDS[obj.shape] if f"{obj.colour} {w}" in text]
            assert nouns, text
            if obj.shape == "circle":
                circle_words.update(nouns)
        still = clips.ClipSpec("gray", False, (clips.ObjectSpec("red", "square", "still", "slow", 5,
                                                                (30, 30)),))
        still_phrases.add(captions.caption(still, rng))
    assert len(circle_words) >= 3 and len(still_phrases) >= 6
    two = next(clip for clip in map(clips.make_clip, range(100)) if len(clip.spec.objects) == 2)
    assert "at the top" in two.caption and "at the bottom" in two.caption


def test_detector_reads_generated_ground_truth():
    accuracy, failures = _accuracy(range(200), "train")
    eval_accuracy, eval_failures = _accuracy(range(1000, 1100), "eval")
    assert accuracy >= 0.99, failures
    assert eval_accuracy >= 0.99, eval_failures


def _blur_and_noise(video: torch.Tensor, seed: int) -> torch.Tensor:
    """Roughly what a small generator's output looks like: soft edges and grain."""
    x = video.permute(0, 3, 1, 2)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return (x + 0.04 * noise).clamp(0, 1).permute(0, 2, 3, 1)


def test_detector_tolerates_blur_and_grain():
    accuracy, failures = _accuracy(range(100), "train", degrade=_blur_and_noise)
    assert accuracy >= 0.97, failures


def test_detector_sees_wrong_clips_as_wrong():
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up",
                "up-left": "down-right", "down-right": "up-left",
                "up-right": "down-left", "down-left": "up-right"}
    moving = [c for c in map(clips.make_clip, range(60))
              if len(c.spec.objects) == 1 and c.spec.objects[0].motion in opposite][:10]
    assert len(moving) == 10
    for clip in moving:  # played backwards, every direction flips
        obj = clip.spec.objects[0]
        found = detector.detect(clip.video.flip(0)).object(obj.colour)
        assert found.motion == opposite[obj.motion], clip.caption
    empty = torch.empty(17, 64, 64, 3)
    empty[:] = torch.tensor(BACKGROUND_COLOURS["white"]) / 255
    assert detector.detect(empty).objects == ()
    assert detector.detect(empty).background == "white"


@pytest.mark.parametrize("motion", ["grow", "bounce", "still", "up-right"])
def test_each_motion_kind_is_classified(motion):
    obj = clips.ObjectSpec("orange", "circle", motion, "fast", 5.0, (20.0, 44.0))
    spec = clips.ClipSpec("dark blue", True, (obj,))
    found = detector.detect(clips.render(spec))
    assert found.background == "dark blue"
    assert [(o.colour, o.motion) for o in found.objects] == [("orange", motion)]
