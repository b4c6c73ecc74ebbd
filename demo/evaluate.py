"""Generate clips with the bundled demo model through the pack's nodes, and score them.

``python -m comfyui_videodit.demo.evaluate`` measures the demo model on 100 held-out prompts
for each of two prompt seeds (200 clips; ``--quick`` for a few minutes' worth, ``--clips N
--seeds A B ...`` for other sizes) and prints a markdown table (``--json FILE`` writes the
numbers too):

- text to video: object colour right, judged on the first frames and on the last frames (and
  over the whole clip), so a colour that drifts during the clip counts as wrong; a table per
  prompted colour, with first-only and last-only rates so drift shows; background; motion and
  direction (linear-motion prompts); shape; the verdicts of VideoDiT Consistency Report on the
  generated clips, on the procedural source clips the prompts describe and on those clips after
  a VAE encode/decode alone;
- image to video: first-frame PSNR against the given image, motion;
- SDEdit and FlowEdit recolouring: colour changed as asked, trajectory gap to the source;
- the detector itself on rendered source clips of both splits: shape confusion table, and the
  text-to-video scorer's rates on ground truth (all should be about 100%).

Everything goes through the same loader, encode, sampler and decode nodes a workflow uses.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .clips import LINEAR_MOTIONS, OBJECT_COLOURS, SHAPES, Clip, ClipSpec, make_clip
from .detector import Detection, detect

DIT = "videodit-demo/demo_dit.safetensors"
TEXT_ENCODER = "videodit-demo/demo_umt5.safetensors"
VAE = "videodit-demo/demo_vae.safetensors"
# Sampling settings of the demo workflows.
STEPS, CFG, SHIFT, SAMPLER = 20, 5.0, 3.0, "unipc"
SIZE, LENGTH = 64, 17
NEGATIVE = ""
# Evaluation size: held-out prompts per prompt seed, and the prompt seeds (each seed is its own
# prompt set), so the default measures 200 clips; --quick measures a few.
CLIPS, SEEDS = 100, (0, 1)
QUICK_CLIPS = 4
# Rendered source clips per split for the detector's own check (no model involved, so cheap),
# drawn from seeds no prompt set uses.
SOURCE_CLIPS, QUICK_SOURCE_CLIPS = 200, 20
SOURCE_SEED_BASE = 50_000_000


@dataclass
class DemoPipeline:
    """The three demo models, loaded once through the loader nodes."""
    model: object = field(init=False)
    text_encoder: object = field(init=False)
    vae: object = field(init=False)

    def __post_init__(self):
        from ..nodes.loaders import VideoDiTModelLoader
        from ..nodes.text import VideoDiTTextEncoderLoader
        from ..nodes.vae import VideoDiTVAELoader

        self.model = VideoDiTModelLoader().load(DIT, "default")[0]
        self.text_encoder = VideoDiTTextEncoderLoader().load(TEXT_ENCODER, "fp32", "default")[0]
        self.vae = VideoDiTVAELoader().load(VAE, "default")[0]

    def conditioning(self, prompt: str, negative: str = NEGATIVE):
        from ..nodes.text import VideoDiTTextEncode
        return VideoDiTTextEncode().encode(self.text_encoder, prompt, negative)[0]

    def sample(self, conditioning, latent, seed: int, *, steps: int = STEPS, cfg: float = CFG,
               shift: float = SHIFT, denoise: float = 1.0) -> dict:
        from ..nodes.sampling import VideoDiTSampler
        return VideoDiTSampler().sample(self.model, conditioning, latent, seed, steps, cfg, shift,
                                        SAMPLER, denoise)[0]

    def decode(self, latent: dict) -> torch.Tensor:
        from ..nodes.vae import VideoDiTVAEDecode
        return VideoDiTVAEDecode().decode(self.vae, latent)[0]

    def encode(self, images: torch.Tensor) -> dict:
        from ..nodes.vae import VideoDiTVAEEncode
        return VideoDiTVAEEncode().encode(self.vae, images)[0]

    def text_to_video(self, prompt: str, seed: int, **settings) -> torch.Tensor:
        """``[17, 64, 64, 3]`` 0..1 (ComfyUI IMAGE)."""
        from ..nodes.conditioning import VideoDiTEmptyLatent
        latent = VideoDiTEmptyLatent().make(self.vae, SIZE, SIZE, LENGTH, 1)[0]
        return self.decode(self.sample(self.conditioning(prompt), latent, seed, **settings))

    def image_to_video(self, image: torch.Tensor, prompt: str, seed: int, **settings) -> torch.Tensor:
        from ..nodes.conditioning import VideoDiTImageToVideo
        conditioning, latent = VideoDiTImageToVideo().prepare(
            self.conditioning(prompt), self.vae, image, SIZE, SIZE, LENGTH)
        return self.decode(self.sample(conditioning, latent, seed, **settings))

    def sdedit(self, video: torch.Tensor, prompt: str, seed: int, denoise: float = 0.6,
               **settings) -> torch.Tensor:
        return self.decode(self.sample(self.conditioning(prompt), self.encode(video), seed,
                                       denoise=denoise, **settings))

    def flowedit(self, video: torch.Tensor, source_prompt: str, target_prompt: str, seed: int, *,
                 steps: int = STEPS, source_cfg: float = 3.0, target_cfg: float = 6.0,
                 skip_steps: int = 6) -> torch.Tensor:
        from ..nodes.sampling import VideoDiTFlowEditSampler
        latent = VideoDiTFlowEditSampler().edit(
            self.model, self.conditioning(source_prompt), self.conditioning(target_prompt),
            self.encode(video), seed, steps, source_cfg, target_cfg, SHIFT, skip_steps, 0, 1)[0]
        return self.decode(latent)



# -- scoring -----------------------------------------------------------------------------------
def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.float() - b.float()).pow(2).mean().clamp_min(1e-12)
    return float(-10 * torch.log10(mse))


def motion_matches(expected: str, seen: str) -> bool:
    return expected == seen


@dataclass
class T2VScore:
    colour: bool          # the prompted colour on the first frames, the last frames and overall
    background: bool
    motion: bool          # the detected motion class equals the prompt's
    direction: bool | None  # for linear motions: the detected direction equals the prompt's
    colour_first: bool = False   # the largest object of the first frames has the prompted colour
    colour_last: bool = False    # ... of the last frames
    colour_whole_clip: bool = False  # ... of the whole clip (blind to a colour change midway)
    shape: bool = False          # the largest object's shape is the prompted one
    prompted_colour: str = ""
    prompted_shape: str = ""
    named_shape: str | None = None  # what the detector calls the largest object's shape
    soft_edge: float | None = None  # its outline's softness (detector.classify_shape)


@dataclass(frozen=True)
class ColourJudgement:
    whole_clip: bool
    first: bool
    last: bool

    @property
    def right(self) -> bool:
        return self.whole_clip and self.first and self.last


def judge_colour(found: Detection, colour: str) -> ColourJudgement:
    """Whether ``colour`` is the largest object's over the whole clip, over its first frames
    and over its last frames (detector.EDGE_FRAMES each)."""
    whole = bool(found.objects) and found.objects[0].colour == colour
    return ColourJudgement(whole, found.first_colour == colour, found.last_colour == colour)


def score_text_to_video(spec: ClipSpec, video: torch.Tensor) -> T2VScore:
    return score_detection(spec, detect(video, max_objects=1))


def score_detection(spec: ClipSpec, found: Detection) -> T2VScore:
    """:func:`score_text_to_video` from a detection already made."""
    obj = spec.objects[0]
    colour = judge_colour(found, obj.colour)
    seen = found.objects[0] if found.objects else None
    # motion is read off the prompted colour's track: a wrong-coloured object moving right
    # does not count
    track = found.object(obj.colour)
    motion = track is not None and track.motion == obj.motion
    direction = motion if obj.motion in LINEAR_MOTIONS else None
    # shape is judged apart from colour, on the largest object whatever its colour
    named = seen.shape if seen else None
    return T2VScore(colour.right, found.background == spec.background, motion, direction,
                    colour.first, colour.last, colour.whole_clip, named == obj.shape,
                    obj.colour, obj.shape, named,
                    seen.shape_features[2] if seen and seen.shape_features else None)


def consistency_verdict(video: torch.Tensor, fps: float = 16.0) -> str:
    """The verdict of VideoDiT Consistency Report on a clip ("good", ...)."""
    from ..nodes.qc import VideoDiTConsistencyReport
    return json.loads(VideoDiTConsistencyReport().report(video, fps)["result"][2])["verdict"]


def trajectory(video: torch.Tensor, colour: str | None = None) -> list[tuple[float, float] | None]:
    """Centroid per frame of the object of ``colour`` (the largest object when None)."""
    found = detect(video, max_objects=2)
    track = found.object(colour) if colour else (found.objects[0] if found.objects else None)
    return list(track.centroids) if track else [None] * video.shape[0]


def trajectory_gap(a, b) -> float:
    """Mean distance in pixels between two trajectories over frames where both are seen
    (infinite when they never are)."""
    gaps = [((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2) ** 0.5 for p, q in zip(a, b) if p and q]
    return sum(gaps) / len(gaps) if len(gaps) >= len(a) // 2 else float("inf")


def held_out_specs(count: int, *, seed: int = 0) -> list:
    """``count`` held-out evaluation clips (one object each), with their captions."""
    return [make_clip(seed * 100_000 + i, split="eval") for i in range(count)]


def other_colour(colour: str, rng: random.Random) -> str:
    return rng.choice(sorted(c for c in OBJECT_COLOURS if c != colour))


def recolour_prompt(clip: Clip, colour: str) -> str:
    return clip.caption.replace(f" {clip.spec.objects[0].colour} ", f" {colour} ", 1)


# -- the parts of the report ---------------------------------------------------------------------
def text_to_video_report(scores: list[T2VScore], verdicts: list[str],
                         source_verdicts: list[str], round_trip_verdicts: list[str]) -> dict:
    """Rates over scored text-to-video clips and the consistency verdicts of the generated
    clips, of their source clips and of those after a VAE round trip (lists may be empty)."""
    linear = [s.direction for s in scores if s.direction is not None]
    return {
        "clips": len(scores),
        "colour": _rate(s.colour for s in scores),
        "colour_first_frames": _rate(s.colour_first for s in scores),
        "colour_last_frames": _rate(s.colour_last for s in scores),
        "colour_whole_clip": _rate(s.colour_whole_clip for s in scores),
        "colour_by_prompted_colour": {
            name: {"clips": len(group), "colour": _rate(s.colour for s in group),
                   "first_frames": _rate(s.colour_first for s in group),
                   "last_frames": _rate(s.colour_last for s in group)}
            for name in OBJECT_COLOURS
            for group in [[s for s in scores if s.prompted_colour == name]]},
        "background": _rate(s.background for s in scores),
        "motion": _rate(s.motion for s in scores),
        "direction": _rate(linear), "linear_clips": len(linear),
        "shape": _rate(s.shape for s in scores),
        "shape_confusion": _confusion((s.prompted_shape, s.named_shape) for s in scores),
        "soft_edge_median": _median([s.soft_edge for s in scores if s.soft_edge is not None]),
        "consistency_report_good": _rate(v == "good" for v in verdicts),
        "consistency_report_not_fail": _rate(v != "fail" for v in verdicts),
        "consistency_report_good_on_source_clips": _rate(v == "good" for v in source_verdicts),
        "consistency_report_not_fail_on_source_clips":
            _rate(v != "fail" for v in source_verdicts),
        "consistency_report_good_on_vae_round_trip":
            _rate(v == "good" for v in round_trip_verdicts),
        "consistency_report_not_fail_on_vae_round_trip":
            _rate(v != "fail" for v in round_trip_verdicts),
        "consistency_verdicts": {"generated": dict(Counter(verdicts)),
                                 "source_clips": dict(Counter(source_verdicts)),
                                 "vae_round_trip": dict(Counter(round_trip_verdicts))},
    }


def image_to_video_report(first_frame_psnr: list[float], motion: list[bool]) -> dict:
    return {"clips": len(first_frame_psnr),
            "first_frame_psnr_min": round(min(first_frame_psnr), 2) if first_frame_psnr else None,
            "first_frame_psnr_mean": (round(sum(first_frame_psnr) / len(first_frame_psnr), 2)
                                      if first_frame_psnr else None),
            "motion": _rate(motion)}


def edit_report(changed: list[ColourJudgement], gaps: list[float]) -> dict:
    """A recolouring edit: colour changed (judged like text to video: first frames, last
    frames and whole clip) and the gap between the source's and the edit's trajectories."""
    return {"clips": len(changed),
            "colour_changed": _rate(c.right for c in changed),
            "colour_changed_whole_clip": _rate(c.whole_clip for c in changed),
            "trajectory_gap_median_px": _median([g for g in gaps if g != float("inf")]),
            "trajectory_within_4px": _rate(g <= 4.0 for g in gaps)}


def source_clip_report(clips_per_split: int) -> dict:
    """The detector on rendered clips of both splits (all sizes, motions, backgrounds, one or
    two objects): the shape of every object, and the text-to-video scorer on one-object clips.
    The ground truth is known exactly, so every rate should be about 100%."""
    shapes, scores = [], []
    # 64x64 clips are too small to split between threads: one is several times faster
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for split, i in ((split, i) for split in ("train", "eval") for i in range(clips_per_split)):
            clip = make_clip(SOURCE_SEED_BASE + i, split)
            found = detect(clip.video, max_objects=2)
            for obj in clip.spec.objects:
                track = found.object(obj.colour)
                shapes.append((obj.shape, track.shape if track else None))
            if len(clip.spec.objects) == 1:
                scores.append(score_detection(clip.spec, found))
    finally:
        torch.set_num_threads(threads)
    return {"clips": 2 * clips_per_split, "objects": len(shapes),
            "shape": _rate(expected == named for expected, named in shapes),
            "shape_confusion": _confusion(shapes),
            "one_object_clips": len(scores),
            "colour": _rate(s.colour for s in scores),
            "background": _rate(s.background for s in scores),
            "motion": _rate(s.motion for s in scores),
            "text_to_video_shape": _rate(s.shape for s in scores)}


# -- the whole evaluation ------------------------------------------------------------------------
def evaluate(clips: int = CLIPS, seeds=SEEDS, *, source_clips: int = SOURCE_CLIPS,
             log=None) -> dict:
    """Every measure, on ``clips`` held-out prompts for each prompt seed in ``seeds``.

    Prompt seed ``s`` takes its text-to-video prompts from ``held_out_specs(clips, seed=s)``,
    its image-to-video clips from seed ``s + 1`` and its edited clips from seed ``s + 2``, as
    a one-seed run always has. Clip ``i`` samples with seed ``s * 100_000 + i``, numbered like
    the prompts, so two prompt seeds never share their noise (seed 0 samples as it always has).
    """
    seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
    log = log or (lambda message: None)

    def noise(seed: int, i: int) -> int:
        return seed * 100_000 + i
    started = time.perf_counter()
    seconds = {}

    def timed(stage: str, started_at: float) -> None:
        seconds[stage] = round(time.perf_counter() - started_at, 1)

    clock = time.perf_counter()
    report = {"detector_on_source_clips": source_clip_report(source_clips)}
    timed("detector_on_source_clips", clock)
    log(f"detector on {2 * source_clips} source clips: {seconds['detector_on_source_clips']} s")

    pipeline = DemoPipeline()
    clock = time.perf_counter()
    scores, verdicts, source_verdicts, round_trip_verdicts = [], [], [], []
    for seed in seeds:
        for i, c in enumerate(held_out_specs(clips, seed=seed)):
            video = pipeline.text_to_video(c.caption, noise(seed, i))
            scores.append(score_text_to_video(c.spec, video))
            verdicts.append(consistency_verdict(video))
            # what the report says of the procedural clip the prompt describes, for scale: hard
            # one-pixel edges that bounce or grow breathe in sharpness, and slow growth is
            # "static"
            source_verdicts.append(consistency_verdict(c.video))
            # and of that clip after a VAE encode/decode alone: the most any DiT can reach
            round_trip_verdicts.append(consistency_verdict(
                pipeline.decode(pipeline.encode(c.video))))
            log(f"text to video, prompt seed {seed}: {i + 1}/{clips}")
    report["text_to_video"] = text_to_video_report(scores, verdicts, source_verdicts,
                                                   round_trip_verdicts)
    timed("text_to_video", clock)

    clock = time.perf_counter()
    i2v_psnr, i2v_motion = [], []
    for seed in seeds:
        for i, c in enumerate(held_out_specs(clips, seed=seed + 1)):
            video = pipeline.image_to_video(c.video[:1], c.caption, noise(seed, i))
            i2v_psnr.append(psnr(video[0], c.video[0]))
            i2v_motion.append(score_text_to_video(c.spec, video).motion)
            log(f"image to video, prompt seed {seed}: {i + 1}/{clips}")
    report["image_to_video"] = image_to_video_report(i2v_psnr, i2v_motion)
    timed("image_to_video", clock)

    edits = {"sdedit": ([], []), "flowedit": ([], [])}
    for seed in seeds:
        rng = random.Random(seed)  # one target colour stream per prompt seed, SDEdit first
        for name, (changed, gaps) in edits.items():
            clock = time.perf_counter()
            for i, c in enumerate(held_out_specs(clips, seed=seed + 2)):
                source_colour = c.spec.objects[0].colour
                target = other_colour(source_colour, rng)
                prompt = recolour_prompt(c, target)
                out = (pipeline.sdedit(c.video, prompt, noise(seed, i)) if name == "sdedit"
                       else pipeline.flowedit(c.video, c.caption, prompt, noise(seed, i)))
                changed.append(judge_colour(detect(out, max_objects=1), target))
                gaps.append(trajectory_gap(trajectory(c.video, source_colour),
                                           trajectory(out, target)))
                log(f"{name}, prompt seed {seed}: {i + 1}/{clips}")
            seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - clock, 1)
    for name, (changed, gaps) in edits.items():
        report[name] = edit_report(changed, gaps)

    seconds["total"] = round(time.perf_counter() - started, 1)
    report["settings"] = {"clips_per_seed": clips, "prompt_seeds": list(seeds),
                          "source_clips_per_split": source_clips, "steps": STEPS, "cfg": CFG,
                          "shift": SHIFT, "sampler": SAMPLER, "seconds": seconds}
    return report


# -- output --------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    """The report as markdown tables (any part may be missing)."""
    lines = []
    settings = report.get("settings")
    if settings:
        seeds = " ".join(str(s) for s in settings["prompt_seeds"])
        lines += [f"## Demo model on held-out prompts: {settings['clips_per_seed']} per prompt "
                  f"seed, seeds {seeds}", ""]
    lines += ["| measure | value | clips |", "|---|---|---|"]
    t2v = report.get("text_to_video")
    if t2v:
        n = t2v["clips"]
        lines += [
            f"| text to video: object colour right (first and last frames) "
            f"| {_pct(t2v['colour'])} | {n} |",
            f"| - first frames only | {_pct(t2v['colour_first_frames'])} | {n} |",
            f"| - last frames only | {_pct(t2v['colour_last_frames'])} | {n} |",
            f"| - largest object over the whole clip | {_pct(t2v['colour_whole_clip'])} | {n} |",
            f"| text to video: background right | {_pct(t2v['background'])} | {n} |",
            f"| text to video: motion right | {_pct(t2v['motion'])} | {n} |",
            f"| text to video: direction right (linear motion) | {_pct(t2v['direction'])} "
            f"| {t2v['linear_clips']} |",
            f"| text to video: shape right | {_pct(t2v['shape'])} | {n} |",
            f"| text to video: outline softness, median (drawn clips 0-4.6) "
            f"| {_num(t2v['soft_edge_median'])} | {n} |",
            f"| consistency report `good`: generated | {_pct(t2v['consistency_report_good'])} "
            f"| {n} |",
            f"| consistency report not `fail`: generated "
            f"| {_pct(t2v['consistency_report_not_fail'])} | {n} |",
            f"| consistency report `good`: source clips "
            f"| {_pct(t2v['consistency_report_good_on_source_clips'])} | {n} |",
            f"| consistency report `good`: VAE round trip of source clips "
            f"| {_pct(t2v['consistency_report_good_on_vae_round_trip'])} | {n} |",
            f"| consistency report not `fail`: VAE round trip "
            f"| {_pct(t2v['consistency_report_not_fail_on_vae_round_trip'])} | {n} |"]
    i2v = report.get("image_to_video")
    if i2v:
        lines += [f"| image to video: first-frame PSNR mean / min "
                  f"| {_num(i2v['first_frame_psnr_mean'])} / "
                  f"{_num(i2v['first_frame_psnr_min'])} dB "
                  f"| {i2v['clips']} |",
                  f"| image to video: motion right | {_pct(i2v['motion'])} | {i2v['clips']} |"]
    for name, label in (("sdedit", "SDEdit"), ("flowedit", "FlowEdit")):
        edit = report.get(name)
        if edit:
            lines += [f"| {label}: colour changed as asked (first and last frames) "
                      f"| {_pct(edit['colour_changed'])} | {edit['clips']} |",
                      f"| {label}: trajectory gap median / within 4 px "
                      f"| {_num(edit['trajectory_gap_median_px'])} px / "
                      f"{_pct(edit['trajectory_within_4px'])} | {edit['clips']} |"]
    source = report.get("detector_on_source_clips")
    if source:
        lines += [f"| detector on source clips: shape right | {_pct(source['shape'])} "
                  f"| {source['objects']} objects |",
                  f"| detector on source clips: colour / background / motion right "
                  f"| {_pct(source['colour'])} / {_pct(source['background'])} / "
                  f"{_pct(source['motion'])} | {source['one_object_clips']} |"]
    if t2v:
        lines += ["", "### Text to video: object colour by prompted colour", "",
                  "| colour | clips | first and last frames | first frames | last frames |",
                  "|---|---|---|---|---|"]
        for name, row in t2v["colour_by_prompted_colour"].items():
            lines.append(f"| {name} | {row['clips']} | {_pct(row['colour'])} "
                         f"| {_pct(row['first_frames'])} | {_pct(row['last_frames'])} |")
        lines += ["", "### Text to video: shape (prompted by row, named by column)", ""]
        lines += _confusion_table(t2v["shape_confusion"])
    if source:
        lines += ["", f"### Detector on {source['clips']} source clips: shape (drawn by row, "
                  "named by column)", ""]
        lines += _confusion_table(source["shape_confusion"])
    if settings:
        timing = ", ".join(f"{k} {v} s" for k, v in settings["seconds"].items())
        lines += ["", f"Sampler {settings['sampler']}, {settings['steps']} steps, cfg "
                  f"{settings['cfg']}, shift {settings['shift']}. Time: {timing}."]
    return "\n".join(lines)


def _confusion(pairs) -> dict:
    """{expected: {named: count}} with "none" for nothing named."""
    table = {shape: {} for shape in SHAPES}
    for expected, named in pairs:
        row = table.setdefault(expected, {})
        key = named or "none"
        row[key] = row.get(key, 0) + 1
    return table


def _confusion_table(table: dict) -> list[str]:
    columns = list(SHAPES) + ["none"]
    lines = ["| | " + " | ".join(columns) + " | right |",
             "|---" * (len(columns) + 2) + "|"]
    for expected, row in table.items():
        total = sum(row.values())
        right = row.get(expected, 0) / total if total else None
        lines.append(f"| {expected} | " + " | ".join(str(row.get(c, 0)) for c in columns)
                     + f" | {_pct(right)} |")
    return lines


def _pct(rate) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _num(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _median(values: list[float]) -> float | None:
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 2) if ordered else None


def _rate(values) -> float | None:
    values = list(values)
    return round(sum(bool(v) for v in values) / len(values), 3) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_videodit.demo.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=None,
                        help=f"held-out prompts per prompt seed (default {CLIPS}; "
                             f"--quick: {QUICK_CLIPS})")
    parser.add_argument("--seeds", "--seed", type=int, nargs="+", default=list(SEEDS),
                        help="prompt seeds, each its own set of prompts (default: %(default)s)")
    parser.add_argument("--source-clips", type=int, default=None,
                        help=f"rendered clips per split for the detector check (default "
                             f"{SOURCE_CLIPS}; --quick: {QUICK_SOURCE_CLIPS})")
    parser.add_argument("--quick", action="store_true",
                        help="a small run for a first look; its rates are too noisy to compare")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the numbers as JSON to FILE ('-': standard output)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    clips = args.clips if args.clips is not None else (QUICK_CLIPS if args.quick else CLIPS)
    source_clips = (args.source_clips if args.source_clips is not None
                    else (QUICK_SOURCE_CLIPS if args.quick else SOURCE_CLIPS))
    log = None if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    report = evaluate(clips, args.seeds, source_clips=source_clips, log=log)
    print(markdown(report))
    if args.json == "-":
        print(json.dumps(report, indent=2))
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
