"""Tiny random models with the real file layouts, written into a models folder for pipeline tests.

The DiT and VAE use ComfyUI's single-file layouts, the text encoder ComfyUI's umT5 file with its
SentencePiece tokenizer embedded, CLIP vision the transformers layout of clip_vision_h.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
from safetensors.torch import save_file

from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig
from comfyui_videodit.networks.wan_vae import WanVAE, WanVAEConfig

TEXT_DIM = 32
CLIP_DIM = 48
CAPTIONS = ["a red ball rolls to the left over a dark blue background",
            "a green square moves up on a white background",
            "a yellow triangle grows slowly in front of a gray wall",
            "a small blue circle bounces from left to right"]


def _scaled_random(module: torch.nn.Module, seed: int, scale: float = 0.05) -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if value.is_floating_point():
            value = torch.randn(value.shape, generator=g) * scale
            if key.endswith(("norm_q.weight", "norm_k.weight", "norm_k_img.weight", "norm3.weight")):
                value = value + 1.0
        state[key] = value.contiguous()
    return state


def randomize_parameters(model: torch.nn.Module, seed: int, scale: float = 0.15) -> torch.nn.Module:
    """Fill a float model's parameters with seeded noise of ``scale`` around 0, norm gains
    around 1, so the activations of a tiny DiT (ours or diffusers') stay O(1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            base = 1.0 if ("norm" in name and name.endswith("weight")) else 0.0
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.copy_(base + scale * noise)
    return model


def write_dit(folder: Path, name: str, model_type: str = "t2v", *, seed: int = 0,
              in_dim: int | None = None, out_dim: int = 16) -> Path:
    channels = {"t2v": 16, "i2v": 36, "ti2v": 48}[model_type]
    config = WanDiTConfig(model_type=model_type, in_dim=in_dim or channels,
                          out_dim=48 if model_type == "ti2v" else out_dim, dim=256, ffn_dim=64,
                          num_heads=2, num_layers=2, text_dim=TEXT_DIM, freq_dim=32,
                          image_dim=CLIP_DIM)
    network = WanDiT(config)
    state = {f"model.diffusion_model.{k}": v for k, v in _scaled_random(network, seed).items()}
    save_file(state, str(folder / name))
    return folder / name


def write_vace_dit(folder: Path, name: str, *, seed: int = 6) -> Path:
    """A Wan 2.1 VACE DiT (text-to-video blocks plus VACE blocks after layers 0 and 1) in the
    original layout, as the released wan2.1_vace_*.safetensors files are."""
    config = WanDiTConfig(model_type="t2v", in_dim=16, out_dim=16, dim=256, ffn_dim=64,
                          num_heads=2, num_layers=2, text_dim=TEXT_DIM, freq_dim=32,
                          vace_layers=(0, 1))
    network = WanDiT(config)
    state = {f"model.diffusion_model.{k}": v for k, v in _scaled_random(network, seed).items()}
    save_file(state, str(folder / name))
    return folder / name


def write_vae(folder: Path, name: str, version: str = "2.1") -> Path:
    config = WanVAEConfig(version, dim=8, decoder_dim=8, z_dim=16 if version == "2.1" else 48)
    torch.manual_seed(0)
    network = WanVAE(config)
    save_file({k: (v * 0.5).contiguous() for k, v in network.state_dict().items()},
              str(folder / name))
    return folder / name


def write_text_encoder(folder: Path, name: str) -> Path:
    import sentencepiece as spm
    import transformers

    model_file = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CAPTIONS * 20), model_writer=model_file, vocab_size=60,
        hard_vocab_limit=False, model_type="unigram", character_coverage=1.0, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    spiece = model_file.getvalue()
    vocab = spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    config = transformers.UMT5Config(vocab_size=vocab, d_model=TEXT_DIM, d_kv=8, d_ff=48,
                                     num_layers=2, num_heads=4, feed_forward_proj="gated-gelu")
    torch.manual_seed(3)
    encoder = transformers.UMT5EncoderModel(config).eval()
    state = {k: v.clone().contiguous() for k, v in encoder.state_dict().items()}
    state["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    save_file(state, str(folder / name))
    return folder / name


def write_clip_vision(folder: Path, name: str) -> Path:
    import transformers

    config = transformers.CLIPVisionConfig(hidden_size=CLIP_DIM, intermediate_size=64,
                                           num_hidden_layers=3, num_attention_heads=4,
                                           image_size=224, patch_size=14, hidden_act="gelu")
    torch.manual_seed(4)
    model = transformers.CLIPVisionModel(config).eval()
    state = {k if k.startswith("vision_model.") else f"vision_model.{k}": v.contiguous()
             for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    save_file(state, str(folder / name))
    return folder / name


def write_lora(folder: Path, name: str, *, seed: int = 0, rank: int = 4, alpha: float = 2.0,
               dim: int = 256, ffn_dim: int = 64, layers: int = 2) -> Path:
    """A LoRA for the tiny DiT in ComfyUI's names, shaped like the step-distill LoRAs: low-rank
    factors with alpha on every block linear, plus bias differences (``diff_b``)."""
    g = torch.Generator().manual_seed(100 + seed)
    state = {}
    shapes = {**{f"{a}.{p}": (dim, dim) for a in ("self_attn", "cross_attn") for p in "qkvo"},
              "ffn.0": (ffn_dim, dim), "ffn.2": (dim, ffn_dim)}
    for block in range(layers):
        for module, (out_features, in_features) in shapes.items():
            key = f"diffusion_model.blocks.{block}.{module}"
            state[f"{key}.lora_down.weight"] = torch.randn(rank, in_features, generator=g) * 0.1
            state[f"{key}.lora_up.weight"] = torch.randn(out_features, rank, generator=g) * 0.1
            state[f"{key}.alpha"] = torch.tensor(alpha)
            state[f"{key}.diff_b"] = torch.randn(out_features, generator=g) * 0.01
    save_file(state, str(folder / name))
    return folder / name


def write_all(models_dir: Path) -> None:
    write_dit(models_dir / "diffusion_models", "tiny_t2v.safetensors", "t2v")
    write_dit(models_dir / "diffusion_models", "tiny_t2v_low.safetensors", "t2v", seed=5)
    write_dit(models_dir / "diffusion_models", "tiny_i2v.safetensors", "i2v", seed=1)
    write_dit(models_dir / "diffusion_models", "tiny_ti2v.safetensors", "ti2v", seed=2)
    write_vae(models_dir / "vae", "tiny_vae21.safetensors", "2.1")
    write_vae(models_dir / "vae", "tiny_vae22.safetensors", "2.2")
    write_text_encoder(models_dir / "text_encoders", "tiny_umt5.safetensors")
    write_clip_vision(models_dir / "clip_vision", "tiny_clip_vision.safetensors")
    write_lora(models_dir / "loras", "tiny_t2v_lora.safetensors")
    write_lora(models_dir / "loras", "tiny_t2v_low_lora.safetensors", seed=1)
