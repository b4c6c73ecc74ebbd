"""CLIP vision transformer (open-clip ViT-H/14 as used by Wan 2.1 image-to-video).

Wan 2.1 I2V/FLF2V feeds the DiT the hidden states after the second-to-last block
(``[N, 257, 1280]`` for ViT-H/14 at 224 px), so :meth:`CLIPVisionEncoder.forward` stops there;
the last block and ``post_layernorm`` are kept only so checkpoints load strictly. The text tower
and the projection head are not part of this module.

Attribute names mirror the transformers / ComfyUI ``clip_vision_h.safetensors`` keys
(``vision_model.embeddings.patch_embedding``, ``vision_model.encoder.layers.N.self_attn.q_proj``
...); other layouts are renamed in ``model_loaders/clip_vision_loader.py``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class CLIPVisionConfig:
    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_layers: int = 32
    num_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"          # ViT-H: exact GELU; OpenAI ViT-L/B: "quick_gelu"

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass(frozen=True)
class CLIPVisionOutput:
    """VIDEODIT_CLIP_VISION_OUTPUT: what the image-to-video node hands to the DiT.

    ``penultimate`` is ``[num_images, 257, 1280]`` float32 for ViT-H/14 (start image, then end
    image when given); FLF2V concatenates the two along tokens.
    """
    penultimate: torch.Tensor


ACTIVATIONS = {
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


class CLIPVisionEmbeddings(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.patch_embedding = nn.Conv2d(3, config.hidden_size, config.patch_size,
                                         stride=config.patch_size, bias=False)
        self.position_embedding = nn.Embedding(config.num_tokens, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = rearrange(self.patch_embedding(pixel_values), "n d h w -> n (h w) d")
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class CLIPAttention(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(proj(x), "n l (h d) -> n h l d", h=self.num_heads)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(rearrange(out, "n h l d -> n l (h d)"))


class CLIPMLP(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.activation = ACTIVATIONS[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = CLIPAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoderStack(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(config.num_layers))


class CLIPVisionTransformer(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # sic
        self.encoder = CLIPEncoderStack(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class CLIPVisionEncoder(nn.Module):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.vision_model = CLIPVisionTransformer(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Penultimate hidden states ``[N, tokens, hidden]`` of normalized ``[N, 3, S, S]`` pixels."""
        tower = self.vision_model
        x = tower.pre_layrnorm(tower.embeddings(pixel_values))
        for layer in tower.encoder.layers[:-1]:
            x = layer(x)
        return x


def preprocess(images: torch.Tensor, size: int, crop: str = "none") -> torch.Tensor:
    """ComfyUI IMAGE ``[N, H, W, C]`` in 0..1 -> normalized pixels ``[N, 3, size, size]``.

    ``crop="none"`` is Wan's own preprocessing (wan/modules/clip.py): squash to size x size with
    bicubic interpolation (no antialiasing), then CLIP mean/std. ``crop="center"`` is ComfyUI's
    CLIP Vision Encode with crop=center: short side to ``size`` with antialiased bicubic, centre
    crop, rounded to 8 bits, then mean/std.
    """
    x = rearrange(images[..., :3].float(), "n h w c -> n c h w")
    if crop == "none":
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    elif crop == "center":
        if x.shape[-2:] != (size, size):
            scale = size / min(x.shape[-2:])
            resized = (round(x.shape[-2] * scale), round(x.shape[-1] * scale))
            x = F.interpolate(x, size=resized, mode="bicubic", antialias=True)
            top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
            x = x[..., top:top + size, left:left + size]
        x = (x * 255).clamp(0, 255).round() / 255
    else:
        raise ValueError(f"crop must be 'none' or 'center', got {crop!r}")
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
