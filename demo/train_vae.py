"""Train the demo VAE: a small Wan 2.1-architecture causal VAE (z 16, 8x space, 4x time).

It is trained on short, small crops of the procedural clips (5 frames of 32x32: the first
frame alone, then a group of four, exactly the chunks the causal encoder sees), through the
same chunked ``encode_chunk`` / ``decode_chunk`` path that inference uses. The latent is
perturbed with noise during training so the decoder also draws clean shapes from the slightly
off latents a diffusion model produces.

After training, an affine map is folded into the VAE's 1x1 latent convolutions so that the
latents of real clips have the Wan 2.1 per-channel statistics: normalised with ``WAN21`` they
are near zero-mean, unit-variance, as the DiT and sampler expect.
"""
from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F

from ..consistency.flow import to_grey
from ..consistency.metrics import laplacian as frame_laplacian
from ..networks.wan_vae import CausalCache, WanVAE, WanVAEConfig
from ..core.latent_formats import WAN21
from .clips import make_clip

VAE_CONFIG = dict(version="2.1", dim=16, decoder_dim=16, z_dim=16, num_res_blocks=1)
CROP_FRAMES, CROP_SIZE = 5, 32
LATENT_NOISE = 0.1   # training noise on the latent, relative to its RMS


def build_vae() -> WanVAE:
    return WanVAE(WanVAEConfig(**VAE_CONFIG))


def initialise(vae: WanVAE) -> None:
    """Initialise weights so that training starts moving at once.

    PyTorch's default convolution init shrinks a signal by about sqrt(3) per layer while its
    random biases add a constant: some twenty layers on, every pixel carries the same bias
    vector, the per-pixel channel norms divide the image content away, and training sits on the
    mean frame for thousands of steps (an overfit test on 16 crops stayed at 15 dB). Unit-gain
    weights, zero biases and residual branches that start at zero (each block begins as its
    shortcut) let the content through: the same test reaches 29 dB in 150 steps.
    """
    for name, parameter in vae.named_parameters():
        if name.endswith("bias") or ".residual.6." in name or ".proj." in name:
            torch.nn.init.zeros_(parameter)
        elif name.endswith("weight") and parameter.dim() >= 4:
            torch.nn.init.kaiming_normal_(parameter, nonlinearity="linear")


def encode(vae: WanVAE, pixels: torch.Tensor) -> torch.Tensor:
    """``[B, 3, T, H, W]`` in -1..1 -> raw latent, chunk by chunk as at inference."""
    cache = CausalCache()
    return torch.cat([vae.encode_chunk(pixels[:, :, s], cache)
                      for s in WanVAE.encode_chunks(pixels.shape[2])], dim=2)


def decode(vae: WanVAE, latent: torch.Tensor) -> torch.Tensor:
    cache = CausalCache()
    return torch.cat([vae.decode_chunk(latent[:, :, i:i + 1], cache)
                      for i in range(latent.shape[2])], dim=2)


def to_pixels(video: torch.Tensor) -> torch.Tensor:
    """A clip's ``[T, H, W, 3]`` 0..1 frames as the VAE's ``[3, T, H, W]`` in -1..1."""
    return video.permute(3, 0, 1, 2) * 2.0 - 1.0


def clip_pixels(seed: int, split: str = "train") -> torch.Tensor:
    """``[3, 17, 64, 64]`` in -1..1."""
    return to_pixels(make_clip(seed, split).video)


def random_crop(video: torch.Tensor, rng: random.Random, frames: int = CROP_FRAMES,
                size: int = CROP_SIZE) -> torch.Tensor:
    _, length, height, width = video.shape
    t = rng.randrange(0, length - frames + 1)
    y = rng.randrange(0, height - size + 1)
    x = rng.randrange(0, width - size + 1)
    return video[:, t:t + frames, y:y + size, x:x + size]


def object_weights(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights ``[B, 1, T, H, W]``: 1 on the background, ``1 + weight`` on the
    shapes and a pixel around them.

    Backgrounds change along y only, so each row's median colour is the background there
    (a shape covers well under half of any row); what differs from it is a shape. Shapes cover
    ~3% of a frame, so with a plain MSE a VAE can score well while drawing them as faint
    blobs; weighting them makes their colour and outline count.
    """
    background = x.median(dim=-1, keepdim=True).values
    mask = ((x - background).abs().amax(dim=1, keepdim=True) > 0.1).float()
    mask = F.max_pool3d(mask, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
    return 1.0 + weight * mask


def train_vae(*, steps: int, image_steps: int = 0, seed: int = 0, batch: int = 16,
              pool: int = 3000, lr: float = 3e-4, crop_frames: int = CROP_FRAMES,
              init: WanVAE | None = None, decoder_only: bool = False,
              object_weight: float = 0.0, stationary_weight: float = 0.0, static_crops: int = 4,
              detail_weight: float = 0.0, temporal_weight: float = 0.0,
              sharpness_weight: float = 0.0, pool_split: str = "train", log=print) -> WanVAE:
    """``image_steps`` on single-frame 32x32 crops first (cheap; the spatial path), then ``steps``
    on ``crop_frames``-frame crops (the temporal path too). ``init`` continues training a VAE.

    Crops of 5 frames train the first two chunks only. Later chunks start from a cache filled
    by earlier chunks, and errors carried in that cache compound chunk after chunk, so whole
    clips only decode well after rounds on whole-length (17-frame) crops.

    ``decoder_only`` trains the decoder side (``conv2`` and ``decoder``) of a finished VAE: the
    latents stay exactly what they were, so a DiT trained on them stays valid.

    ``stationary_weight`` adds ``static_crops`` still crops (one frame repeated) to each batch
    and a loss on how much their latent frames differ (see :func:`latent_drift`).

    ``detail_weight`` and ``temporal_weight`` add :func:`detail_loss` and :func:`temporal_loss`
    (object-weighted like the reconstruction): they make every frame as sharp as its source and
    every frame-to-frame change the source's, so decoded clips neither breathe nor morph.
    ``sharpness_weight`` adds :func:`sharpness_loss`, which holds each frame's detail energy.

    ``pool_split`` is the clip split the crops come from (``clips.sample_spec``): "train", or
    "all" to include the combinations held out from the DiT. Trained on "train" only, the
    decoder drew a fast-moving blue shape cyan in every latent frame after the first, because
    three of blue's four leftward combinations (the README's own prompt among them) are held
    out, while the encoder did keep blue and cyan apart.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if init is None:
        vae = build_vae()
        initialise(vae)
    else:
        vae = init.train().requires_grad_(True)
    # a pool of rendered clips, cropped afresh each step (rendering is the slow part)
    clips = [clip_pixels(1_000_000 + i, pool_split) for i in range(pool)]
    trained = [p for n, p in vae.named_parameters()
               if not decoder_only or n.startswith(("conv2.", "decoder."))]
    if decoder_only:
        vae.encoder.requires_grad_(False)
        vae.conv1.requires_grad_(False)
    # with the init above, 3e-4 learns fastest; 5e-4 already overshoots
    optimiser = torch.optim.AdamW(trained, lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    start, running, total = time.monotonic(), None, image_steps + steps
    for step in range(total):
        # cosine decay, after a short warm-up
        progress = step / total
        for group in optimiser.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50) * (0.55 + 0.45 * math.cos(math.pi * progress))
        if step < image_steps:
            x = torch.stack([random_crop(rng.choice(clips), rng, 1) for _ in range(batch)])
        else:
            x = torch.stack([random_crop(rng.choice(clips), rng, crop_frames)
                             for _ in range(batch)])
            if stationary_weight:
                still = torch.stack([random_crop(rng.choice(clips), rng, 1)
                                     for _ in range(static_crops)])
                x = torch.cat([x, still.expand(-1, -1, crop_frames, -1, -1)])
        if decoder_only:
            with torch.no_grad():
                mu = encode(vae, x)
        else:
            mu = encode(vae, x)
        rms = mu.detach().pow(2).mean(dim=(0, 2, 3, 4), keepdim=True).sqrt() + 1e-3
        z = mu + LATENT_NOISE * rms * torch.randn_like(mu)
        out = decode(vae, z)
        if object_weight:
            weights = object_weights(x, object_weight)
            loss = weighted_mean((out - x) ** 2, weights)
        else:
            loss = F.mse_loss(out, x)
        if detail_weight:
            loss = loss + detail_weight * detail_loss(out, x, weights if object_weight else None)
        if sharpness_weight:
            loss = loss + sharpness_weight * sharpness_loss(out, x)
        if temporal_weight and x.shape[2] > 1:
            loss = loss + temporal_weight * temporal_loss(out, x)
        if stationary_weight and step >= image_steps:
            loss = loss + stationary_weight * latent_drift(mu[-static_crops:])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimiser.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0:
            log(f"vae step {step + 1}/{total} loss {running:.4f} "
                f"({time.monotonic() - start:.0f}s)")
    vae.eval().requires_grad_(False)
    log(f"vae trained: {total} steps in {time.monotonic() - start:.0f}s")
    return vae


def weighted_mean(err: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean of ``err`` ``[B, C, T, H, W]`` under per-pixel ``weights`` ``[B, 1, T, H, W]``."""
    return (err * weights).sum() / (weights.sum() * err.shape[1])


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """The consistency report's per-frame Laplacian, on every channel of ``[B, C, T, H, W]``."""
    b, c, t, h, w = x.shape
    frames = frame_laplacian(x.transpose(1, 2).reshape(b * t * c, 1, h, w))
    return frames.view(b, t, c, h, w).transpose(1, 2)


def detail_loss(out: torch.Tensor, x: torch.Tensor, weights: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Squared error of the decoded frames' Laplacian against the source's.

    Trained on pixel error alone, the causal decoder drew the first frame (coded alone) sharper
    than the later ones and let edge sharpness wander within each group of four frames: the
    consistency report's sharpness-breathing metric (hf_pump) failed on three clips in four
    after a plain encode/decode round trip. Matching the Laplacian fixes each frame's edges.
    """
    err = (laplacian(out) - laplacian(x)) ** 2
    return err.mean() if weights is None else weighted_mean(err, weights)


def detail_energy(x: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` mean squared Laplacian of each frame's luma divided by its mean, the
    per-frame quantity whose wobble the consistency report calls sharpness breathing."""
    b, _, t, h, w = x.shape
    luma = to_grey(((x + 1) / 2).transpose(1, 2).reshape(b * t, 3, h, w))
    luma = luma / luma.mean(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return frame_laplacian(luma).pow(2).mean(dim=(1, 2, 3)).view(b, t)


def sharpness_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error of the second temporal difference of each frame's log detail energy
    against the source's: sharpness may differ from the source's, but not wobble about it.

    A tiny decoder cannot draw the sources' one-pixel edges (its frames carry a tenth of their
    detail energy), so asking for the same energy would ask for artefacts; what the report
    fails is energy pumping in the four-frame rhythm of the decoder's time upsampling.
    """
    source = detail_energy(x)
    floor = 0.05 * source.mean(dim=1, keepdim=True) + 1e-5

    def wobble(energy: torch.Tensor) -> torch.Tensor:
        e = torch.log(energy + floor)
        return e[:, 2:] - 2 * e[:, 1:-1] + e[:, :-2]

    return (wobble(detail_energy(out)) - wobble(source)).pow(2).mean()


def temporal_loss(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Squared error of the frame-to-frame change against the source's change.

    A decoder that is slightly wrong in a different way on every frame has a small pixel error
    but a large motion-compensated error (morphing); this penalises the difference directly.
    """
    return F.mse_loss(out[:, :, 1:] - out[:, :, :-1], x[:, :, 1:] - x[:, :, :-1])


def latent_drift(mu: torch.Tensor) -> torch.Tensor:
    """How much the latent frames of still clips differ, relative to the latent's spread.

    A causal encoder starts each clip from an empty cache, so unless trained otherwise it gives
    the same still scene a different code in every latent frame (trained on reconstruction
    alone, this VAE's frames 0 and 4 of a still clip differed by more than the latents' own
    spread). A DiT then has to learn a different code per frame index, and its objects drift,
    split and fade from frame to frame. Penalising the drift gives a scene one code at every
    frame, so moving an object is moving its code.
    """
    drift = (mu - mu.mean(dim=2, keepdim=True)).pow(2).mean()
    return drift / mu.detach().var().clamp_min(1e-6)


@torch.no_grad()
def match_wan21_statistics(vae: WanVAE, clips: list[torch.Tensor]) -> None:
    """Fold ``z' = a z + b`` into the encoder's and decoder's 1x1 latent convolutions so that
    latents of ``clips`` have WAN21's per-channel mean and std; decoding is unchanged."""
    z_dim = vae.config.z_dim
    latents = torch.cat([encode(vae, torch.stack(clips[i:i + 32]))
                         for i in range(0, len(clips), 32)])
    mean = latents.mean(dim=(0, 2, 3, 4)).double()
    std = latents.std(dim=(0, 2, 3, 4)).double()
    target_mean = torch.tensor(WAN21.mean, dtype=torch.float64)
    target_std = torch.tensor(WAN21.std, dtype=torch.float64)
    a = target_std / std
    b = target_mean - a * mean
    enc_w = vae.conv1.weight.double()   # [2z, 2z, 1, 1, 1]; rows :z give the mean
    enc_b = vae.conv1.bias.double()
    enc_w[:z_dim] *= a.view(-1, 1, 1, 1, 1)
    enc_b[:z_dim] = a * enc_b[:z_dim] + b
    vae.conv1.weight.copy_(enc_w)
    vae.conv1.bias.copy_(enc_b)
    # decoder input: z = (z' - b) / a
    dec_w = vae.conv2.weight.double()   # [z, z, 1, 1, 1], input channels on dim 1
    dec_b = vae.conv2.bias.double()
    shift = (b / a)
    dec_b = dec_b - (dec_w[:, :, 0, 0, 0] * shift.view(1, -1)).sum(dim=1)
    dec_w = dec_w / a.view(1, -1, 1, 1, 1)
    vae.conv2.weight.copy_(dec_w)
    vae.conv2.bias.copy_(dec_b)
