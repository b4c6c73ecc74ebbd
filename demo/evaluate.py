"""Generate clips with the bundled demo model through the pack's nodes, and score them.

``python -m comfyui_videodit.demo.evaluate --clips 100`` prints the rates the tests check
(on more clips): text-to-video on held-out prompts, image-to-video, and the two video edits.
Everything goes through the same loader, encode, sampler and decode nodes a workflow uses.
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field

import torch

from .clips import LINEAR_MOTIONS, OBJECT_COLOURS, ClipSpec, make_clip
from .detector import detect

DIT = "videodit-demo/demo_dit.safetensors"
TEXT_ENCODER = "videodit-demo/demo_umt5.safetensors"
VAE = "videodit-demo/demo_vae.safetensors"
# Sampling settings of the demo workflows.
STEPS, CFG, SHIFT, SAMPLER = 20, 5.0, 3.0, "unipc"
SIZE, LENGTH = 64, 17
NEGATIVE = ""


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
    colour: bool
    background: bool
    motion: bool          # the detected motion class equals the prompt's
    direction: bool | None  # for linear motions: the detected direction equals the prompt's


def score_text_to_video(spec: ClipSpec, video: torch.Tensor) -> T2VScore:
    obj = spec.objects[0]
    found = detect(video, max_objects=1)
    track = found.object(obj.colour)
    seen = found.objects[0] if found.objects else None
    colour = track is not None and seen is not None and seen.colour == obj.colour
    motion = track is not None and track.motion == obj.motion
    direction = (track is not None and track.motion == obj.motion) \
        if obj.motion in LINEAR_MOTIONS else None
    return T2VScore(colour, found.background == spec.background, motion, direction)


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


def evaluate(clips: int, seed: int = 0) -> dict:
    pipeline = DemoPipeline()
    rng = random.Random(seed)
    t2v, verdicts, source_verdicts, round_trip_verdicts = [], [], [], []
    for i, c in enumerate(held_out_specs(clips, seed=seed)):
        video = pipeline.text_to_video(c.caption, seed + i)
        t2v.append(score_text_to_video(c.spec, video))
        verdicts.append(consistency_verdict(video))
        # what the report says of the procedural clip the prompt describes, for scale: hard
        # one-pixel edges that bounce or grow breathe in sharpness, and slow growth is "static"
        source_verdicts.append(consistency_verdict(c.video))
        # and of that clip after a VAE encode/decode alone: the most any DiT can reach
        round_trip_verdicts.append(consistency_verdict(pipeline.decode(pipeline.encode(c.video))))
    linear = [s.direction for s in t2v if s.direction is not None]
    report = {"text_to_video": {
        "clips": len(t2v), "colour": _rate(s.colour for s in t2v),
        "background": _rate(s.background for s in t2v), "motion": _rate(s.motion for s in t2v),
        "direction": _rate(linear), "linear_clips": len(linear),
        "consistency_report_good": _rate(v == "good" for v in verdicts),
        "consistency_report_not_fail": _rate(v != "fail" for v in verdicts),
        "consistency_report_good_on_source_clips": _rate(v == "good" for v in source_verdicts),
        "consistency_report_good_on_vae_round_trip": _rate(v == "good" for v in round_trip_verdicts),
        "consistency_report_not_fail_on_vae_round_trip":
            _rate(v != "fail" for v in round_trip_verdicts)}}
    i2v_psnr, i2v_motion = [], []
    for i, c in enumerate(held_out_specs(clips, seed=seed + 1)):
        video = pipeline.image_to_video(c.video[:1], c.caption, seed + i)
        i2v_psnr.append(psnr(video[0], c.video[0]))
        i2v_motion.append(score_text_to_video(c.spec, video).motion)
    report["image_to_video"] = {"clips": clips, "first_frame_psnr_min": min(i2v_psnr),
                                "first_frame_psnr_mean": sum(i2v_psnr) / clips,
                                "motion": _rate(i2v_motion)}
    for name in ("sdedit", "flowedit"):
        changed, gaps = [], []
        for i, c in enumerate(held_out_specs(clips, seed=seed + 2)):
            obj = c.spec.objects[0]
            target = other_colour(obj.colour, rng)
            prompt = c.caption.replace(f" {obj.colour} ", f" {target} ", 1)
            out = (pipeline.sdedit(c.video, prompt, seed + i) if name == "sdedit"
                   else pipeline.flowedit(c.video, c.caption, prompt, seed + i))
            found = detect(out, max_objects=1)
            changed.append(bool(found.objects) and found.objects[0].colour == target)
            gaps.append(trajectory_gap(trajectory(c.video, obj.colour), trajectory(out, target)))
        finite = sorted(g for g in gaps if g != float("inf"))
        report[name] = {"clips": clips, "colour_changed": _rate(changed),
                        "trajectory_gap_median_px": finite[len(finite) // 2] if finite else None,
                        "trajectory_within_4px": _rate(g <= 4.0 for g in gaps)}
    return report


def _rate(values) -> float | None:
    values = list(values)
    return round(sum(bool(v) for v in values) / len(values), 3) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_videodit.demo.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.clips, args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
