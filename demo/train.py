"""Train the bundled demo model: ``python -m comfyui_videodit.demo.train --output demo_models``.

Three stages, all on CPU and deterministic for a given seed and thread count:
1. the VAE on crops of procedural clips (``train_vae``), then its latents mapped onto the Wan 2.1
   statistics, then rounds on the decoder alone (optionally with losses against morphing and
   sharpness breathing; the latents do not change);
2. latents of the training clips (the first ``--clips`` seeds of the training split), normalised;
3. the SentencePiece tokenizer on the captions, then the umT5 text encoder and the TI2V-type DiT
   together (``train_dit``).

Writes the three model files in ComfyUI's layouts and ``training.json`` (command, seed, steps,
times, losses, hardware). About 100 minutes on two CPU cores with the defaults.
``--vae-state`` starts from an earlier VAE, ``--dit-init`` from an earlier text encoder and DiT
(``--dit-steps 0`` keeps them as they are: a decoder-only run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

# folder -> file, laid out like a ComfyUI models folder (listed as "videodit-demo/<file>")
FILES = {
    "diffusion_models": "demo_dit.safetensors",
    "text_encoders": "demo_umt5.safetensors",
    "vae": "demo_vae.safetensors",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_videodit.demo.train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="folder for the model files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-image-steps", type=int, default=1500,
                        help="VAE steps on single-frame crops (the spatial path)")
    parser.add_argument("--vae-steps", type=int, default=600, help="VAE steps on 5-frame crops")
    parser.add_argument("--vae-clip-steps", type=int, default=200,
                        help="VAE steps per round on whole-length (17-frame) crops at the end")
    parser.add_argument("--vae-clip-rounds", type=int, default=3,
                        help="rounds of --vae-clip-steps, each with a fresh warm-up and decay")
    parser.add_argument("--vae-stationary-steps", type=int, default=400,
                        help="VAE steps on whole-length crops plus still crops, with a loss on "
                             "how much a still clip's latent frames differ")
    parser.add_argument("--vae-stationary-weight", type=float, default=0.5,
                        help="weight of that loss (see train_vae.latent_drift)")
    parser.add_argument("--vae-object-weight", type=float, default=5.0,
                        help="extra loss weight on the shapes' pixels (see train_vae.object_weights)")
    parser.add_argument("--vae-decoder-steps", type=int, default=300,
                        help="VAE steps on the decoder alone, on 17-frame crops, after the "
                             "latents are fixed")
    parser.add_argument("--vae-decoder-rounds", type=int, default=1,
                        help="rounds of --vae-decoder-steps (each with a fresh warm-up)")
    parser.add_argument("--vae-detail-weight", type=float, default=0.0,
                        help="decoder rounds: weight of the Laplacian loss (train_vae.detail_loss)")
    parser.add_argument("--vae-temporal-weight", type=float, default=0.0,
                        help="decoder rounds: weight of the frame-change loss "
                             "(train_vae.temporal_loss)")
    parser.add_argument("--vae-sharpness-weight", type=float, default=0.0,
                        help="decoder rounds: weight of the sharpness-wobble loss "
                             "(train_vae.sharpness_loss)")
    parser.add_argument("--vae-pool", type=int, default=3000, help="rendered clips the VAE "
                        "crops from")
    parser.add_argument("--vae-decoder-pool-split", choices=("train", "all"), default="train",
                        help="decoder rounds: the clip split their crops come from ('all' "
                             "includes the combinations held out from the DiT; see "
                             "train_vae.train_vae)")
    parser.add_argument("--clips", type=int, default=5000, help="training clips for the DiT")
    parser.add_argument("--dit-steps", type=int, default=4000)
    parser.add_argument("--dit-lr", type=float, default=6e-4, help="peak learning rate of the "
                        "DiT and text encoder (cosine decay after a 100-step warm-up)")
    parser.add_argument("--dit-first-frame-weight", type=float, default=1.0,
                        help="loss weight of latent frame 0 in text-to-video samples "
                             "(see train_dit.train_dit)")
    parser.add_argument("--dit-init", type=Path,
                        help="continue training the text encoder and DiT of an earlier output "
                             "folder (its tokenizer is kept) instead of starting afresh; with "
                             "--dit-steps 0 they are copied unchanged and no latents are made")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads (results are deterministic for a given seed and "
                             "thread count)")
    parser.add_argument("--vae-state", type=Path,
                        help="skip stage 1: a VAE file written by an earlier run of stage 1 "
                             "(a JSON file of the same name + .json, if present, is its report)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, args.threads)))
    args.output.mkdir(parents=True, exist_ok=True)
    report: dict = {"command": "python -m comfyui_videodit.demo.train " + " ".join(
        sys.argv[1:] if argv is None else argv), "seed": args.seed, "hardware": _hardware(),
        "stages": {}}

    def log(message: str) -> None:
        print(message, flush=True)

    from safetensors.torch import load_file, save_file

    from . import train_dit, train_vae
    from ..core.latent_formats import WAN21

    # 1. VAE
    t0 = time.monotonic()
    if args.vae_state:
        vae = train_vae.build_vae()
        vae.load_state_dict(load_file(str(args.vae_state)))
        vae.eval().requires_grad_(False)
        sidecar = args.vae_state.with_name(args.vae_state.name + ".json")
        report["stages"]["vae"] = {"from": args.vae_state.name, **(
            json.loads(sidecar.read_text()) if sidecar.is_file() else {})}
    else:
        common = dict(pool=args.vae_pool, object_weight=args.vae_object_weight, log=log)
        vae = train_vae.train_vae(steps=0, image_steps=args.vae_image_steps, seed=args.seed,
                                  **common)
        vae = train_vae.train_vae(steps=args.vae_steps, seed=args.seed + 1, init=vae, **common)
        for round_ in range(args.vae_clip_rounds):
            vae = train_vae.train_vae(steps=args.vae_clip_steps, seed=args.seed + 2 + round_,
                                      crop_frames=17, batch=8, init=vae, **common)
        if args.vae_stationary_steps:
            vae = train_vae.train_vae(steps=args.vae_stationary_steps,
                                      seed=args.seed + 2 + args.vae_clip_rounds, crop_frames=17,
                                      batch=8, init=vae,
                                      stationary_weight=args.vae_stationary_weight, **common)
        reference = [train_vae.clip_pixels(2_000_000 + i) for i in range(256)]
        train_vae.match_wan21_statistics(vae, reference)
        report["stages"]["vae"] = {"image_steps": args.vae_image_steps, "steps": args.vae_steps,
                                   "clip_steps": args.vae_clip_steps,
                                   "clip_rounds": args.vae_clip_rounds,
                                   "stationary_steps": args.vae_stationary_steps,
                                   "stationary_weight": args.vae_stationary_weight,
                                   "object_weight": args.vae_object_weight,
                                   "seconds": round(time.monotonic() - t0)}
    for folder in FILES:
        (args.output / folder).mkdir(exist_ok=True)
    if args.vae_decoder_steps:
        # the encoder is frozen, so the latents below are the same with or without this
        t1 = time.monotonic()
        vae = train_decoder(vae, args, log)
        report["stages"]["vae"].update(decoder_steps=args.vae_decoder_steps,
                                       decoder_seconds=round(time.monotonic() - t1))
        extra_losses = decoder_losses(args)
        if args.vae_decoder_rounds != 1 or extra_losses:
            report["stages"]["vae"].update(decoder_rounds=args.vae_decoder_rounds, **extra_losses)
    vae_file = args.output / "vae" / FILES["vae"]
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(vae_file))

    if args.dit_init and args.dit_steps == 0:
        # a VAE-decoder-only run: the text encoder and DiT are the earlier ones, byte for byte
        for folder in ("text_encoders", "diffusion_models"):
            shutil.copyfile(args.dit_init / folder / FILES[folder],
                            args.output / folder / FILES[folder])
        report["stages"]["dit"] = {"steps": 0, "copied_from": str(args.dit_init)}
        return _finish(report, args.output, log)

    # 2. latents of the training clips
    t0 = time.monotonic()
    from .clips import make_clip
    specs, latents = [], []
    with torch.no_grad():
        for start in range(0, args.clips, 32):
            clips = [make_clip(args.seed * 10_000_000 + i) for i in range(start, min(start + 32, args.clips))]
            specs += [c.spec for c in clips]
            pixels = torch.stack([train_vae.to_pixels(c.video) for c in clips])
            latents.append(WAN21.normalize(train_vae.encode(vae, pixels)).half())
            if (start // 32) % 20 == 0:
                log(f"latents {start + len(clips)}/{args.clips} ({time.monotonic() - t0:.0f}s)")
    latents = torch.cat(latents)
    report["stages"]["latents"] = {"clips": args.clips, "seconds": round(time.monotonic() - t0),
                                   "mean": round(latents.float().mean().item(), 3),
                                   "std": round(latents.float().std().item(), 3)}

    # 3. tokenizer, text encoder and DiT
    t0 = time.monotonic()
    captions = train_dit.caption_variants(specs, args.seed)
    init = None
    if args.dit_init:
        text_state = load_file(str(args.dit_init / "text_encoders" / FILES["text_encoders"]))
        spiece = bytes(text_state.pop("spiece_model").tolist())
        init = (text_state, load_file(str(args.dit_init / "diffusion_models" /
                                          FILES["diffusion_models"])))
    else:
        spiece = train_dit.train_tokenizer([c for variants in captions for c in variants])
    losses: list[float] = []

    def log_dit(message: str) -> None:
        log(message)
        if " loss " in message:
            losses.append(float(message.split(" loss ")[1].split()[0]))

    encoder, dit = train_dit.train_dit(latents, captions, spiece, steps=args.dit_steps,
                                       seed=args.seed, lr=args.dit_lr,
                                       first_frame_weight=args.dit_first_frame_weight,
                                       init=init, log=log_dit)
    report["stages"]["dit"] = {"steps": args.dit_steps, "lr": args.dit_lr,
                               "first_frame_weight": args.dit_first_frame_weight,
                               "seconds": round(time.monotonic() - t0),
                               "loss_every_50_steps": losses}
    if args.dit_init:
        report["stages"]["dit"]["continued_from"] = str(args.dit_init)
    text_state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    text_state["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(text_state, str(args.output / "text_encoders" / FILES["text_encoders"]))
    architecture = json.dumps({"model_type": dit.config.model_type,
                               "num_heads": dit.config.num_heads})
    from ..model_loaders.wan_dit_loader import ARCHITECTURE_METADATA
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()},
              str(args.output / "diffusion_models" / FILES["diffusion_models"]),
              metadata={ARCHITECTURE_METADATA: architecture})
    return _finish(report, args.output, log)


def _finish(report: dict, output: Path, log) -> int:
    report["files"] = {f"{folder}/{name}": (output / folder / name).stat().st_size
                       for folder, name in FILES.items()}
    (output / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {', '.join(FILES.values())} to {output}")
    return 0


def decoder_losses(args) -> dict:
    """The decoder rounds' extra loss weights that are switched on."""
    weights = {"detail_weight": args.vae_detail_weight,
               "temporal_weight": args.vae_temporal_weight,
               "sharpness_weight": args.vae_sharpness_weight}
    losses = {k: v for k, v in weights.items() if v}
    if args.vae_decoder_pool_split != "train":
        losses["pool_split"] = args.vae_decoder_pool_split
    return losses


def train_decoder(vae, args, log=print):
    """``--vae-decoder-rounds`` rounds of ``--vae-decoder-steps`` decoder-only steps on whole
    17-frame crops; the encoder, and so every latent, stays as it was."""
    from . import train_vae

    for round_ in range(args.vae_decoder_rounds):
        vae = train_vae.train_vae(steps=args.vae_decoder_steps, pool=args.vae_pool,
                                  seed=args.seed + 100 + round_, crop_frames=17, batch=8,
                                  init=vae, decoder_only=True,
                                  object_weight=args.vae_object_weight,
                                  detail_weight=args.vae_detail_weight,
                                  temporal_weight=args.vae_temporal_weight,
                                  sharpness_weight=args.vae_sharpness_weight,
                                  pool_split=args.vae_decoder_pool_split, log=log)
    return vae


def _hardware() -> dict:
    return {"machine": platform.machine(), "processor": platform.processor() or None,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__}


if __name__ == "__main__":
    raise SystemExit(main())
