"""Wan VAE key layouts: diffusers ``AutoencoderKLWan`` names -> original (Wan / ComfyUI) names,
and the network configuration read back from a state dict's names and shapes.

Original names are what :mod:`networks.wan_vae` uses. The diffusers layout groups the flat
original lists into blocks; the renames here undo that grouping:

=====================================================  ===============================================
diffusers                                              original
=====================================================  ===============================================
``quant_conv`` / ``post_quant_conv``                   ``conv1`` / ``conv2``
``{encoder,decoder}.conv_in`` / ``norm_out`` / ``conv_out``  ``….conv1`` / ``head.0`` / ``head.2``
``mid_block.resnets.0`` / ``attentions.0`` / ``resnets.1``   ``middle.0`` / ``middle.1`` / ``middle.2``
``…norm1`` / ``conv1`` / ``norm2`` / ``conv2`` / ``conv_shortcut``  ``residual.0`` / ``.2`` / ``.3`` / ``.6`` / ``shortcut``
2.1 ``encoder.down_blocks.N``                          ``encoder.downsamples.N`` (same flat order)
2.1 ``decoder.up_blocks.i.resnets.j`` / ``upsamplers.0``  ``decoder.upsamples.{i·(R+2)+j}`` / ``{i·(R+2)+R+1}``
2.2 ``encoder.down_blocks.i.resnets.j`` / ``downsampler``  ``encoder.downsamples.i.downsamples.j`` / ``.R``
2.2 ``decoder.up_blocks.i.resnets.j`` / ``upsampler``  ``decoder.upsamples.i.upsamples.j`` / ``.R+1``
=====================================================  ===============================================

(R = residual blocks per encoder stage; decoder stages have R+1.)
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from ..networks.wan_vae import WanVAEConfig

MARKER_22 = "decoder.upsamples.0.upsamples.0.residual.2.weight"

_RESNET_PARTS = {"norm1.gamma": "residual.0.gamma", "conv1.": "residual.2.",
                 "norm2.gamma": "residual.3.gamma", "conv2.": "residual.6.",
                 "conv_shortcut.": "shortcut."}
_TOP = {"quant_conv.": "conv1.", "post_quant_conv.": "conv2."}


def is_diffusers_layout(keys) -> bool:
    return any(k.startswith(("encoder.conv_in.", "decoder.conv_in.")) for k in keys)


def _resnet_rest(rest: str) -> str:
    for old, new in _RESNET_PARTS.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def diffusers_to_original(state: Mapping[str, object]) -> dict[str, object]:
    """Rename a diffusers ``AutoencoderKLWan`` state dict to the original layout."""
    keys = list(state)
    residual_up = any(".upsampler." in k for k in keys) or any(".downsampler." in k for k in keys)
    up_resnets = _count(keys, r"decoder\.up_blocks\.0\.resnets\.(\d+)\.")  # R + 1
    out: dict[str, object] = {}
    for key, value in state.items():
        new = key
        for old, repl in _TOP.items():
            if key.startswith(old):
                new = repl + key[len(old):]
        if m := re.match(r"(encoder|decoder)\.(conv_in|norm_out|conv_out)\.(.*)", key):
            part = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}[m.group(2)]
            new = f"{m.group(1)}.{part}.{m.group(3)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key):
            index = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[
                (m.group(2), int(m.group(3)))]
            rest = _resnet_rest(m.group(4)) if m.group(2) == "resnets" else m.group(4)
            new = f"{m.group(1)}.middle.{index}.{rest}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):  # 2.2
            new = f"encoder.downsamples.{m.group(1)}.downsamples.{m.group(2)}.{_resnet_rest(m.group(3))}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsampler\.(.*)", key):  # 2.2
            resnets = _count(keys, rf"encoder\.down_blocks\.{m.group(1)}\.resnets\.(\d+)\.")
            new = f"encoder.downsamples.{m.group(1)}.downsamples.{resnets}.{m.group(2)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.(.*)", key):  # 2.1, flat
            new = f"encoder.downsamples.{m.group(1)}.{_resnet_rest(m.group(2))}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            block, resnet, rest = int(m.group(1)), int(m.group(2)), _resnet_rest(m.group(3))
            new = (f"decoder.upsamples.{block}.upsamples.{resnet}.{rest}" if residual_up else
                   f"decoder.upsamples.{block * (up_resnets + 1) + resnet}.{rest}")
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsampler\.(.*)", key):  # 2.2
            new = f"decoder.upsamples.{m.group(1)}.upsamples.{up_resnets}.{m.group(2)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key):  # 2.1
            new = f"decoder.upsamples.{int(m.group(1)) * (up_resnets + 1) + up_resnets}.{m.group(2)}"
        out[new] = value
    return out


def original_to_diffusers(state: Mapping[str, object]) -> dict[str, object]:
    """The inverse rename (for the parity tests and the bench, which feed diffusers)."""
    renamed = diffusers_to_original({name: name for name in _diffusers_names(config_from_state(state))})
    return {renamed[k]: v for k, v in state.items()}


def _diffusers_names(cfg: WanVAEConfig) -> list[str]:
    from diffusers import AutoencoderKLWan  # test/bench helper only; never on the load path
    import torch
    with torch.device("meta"):
        model = AutoencoderKLWan(**diffusers_config(cfg))
    return list(model.state_dict())


def diffusers_config(cfg: WanVAEConfig) -> dict:
    """``AutoencoderKLWan`` keyword arguments equivalent to ``cfg``."""
    extra = {}
    if cfg.version == "2.2":
        extra = dict(is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                     scale_factor_spatial=16, latents_mean=[0.0] * cfg.z_dim,
                     latents_std=[1.0] * cfg.z_dim)
    return dict(base_dim=cfg.dim, decoder_base_dim=cfg.decoder_dim, z_dim=cfg.z_dim,
                dim_mult=list(cfg.dim_mult), num_res_blocks=cfg.num_res_blocks,
                temperal_downsample=list(cfg.temporal_downsample), **extra)


def config_from_state(state: Mapping[str, object]) -> WanVAEConfig:
    """Read the configuration from original-layout names and shapes."""
    keys = list(state)

    def shape(key: str) -> tuple[int, ...]:
        value = state[key]
        return tuple(value.shape if hasattr(value, "shape") else value)

    version = "2.2" if MARKER_22 in state else "2.1"
    dim = shape("encoder.conv1.weight")[0]
    z_dim = shape("conv2.weight")[0]
    top = shape("decoder.conv1.weight")[0]
    if version == "2.2":
        stages = _count(keys, r"encoder\.downsamples\.(\d+)\.")
        mult = [shape(f"encoder.downsamples.{i}.downsamples.0.residual.2.weight")[0] // dim
                for i in range(stages)]
        res_blocks = _count(keys, r"encoder\.downsamples\.0\.downsamples\.(\d+)\.residual")
        temporal = [f"encoder.downsamples.{i}.downsamples.{res_blocks}.time_conv.weight" in state
                    for i in range(stages - 1)]
    else:
        mult, temporal, res_blocks, in_stage = [], [], 0, 0
        for i in range(_count(keys, r"encoder\.downsamples\.(\d+)\.")):
            if f"encoder.downsamples.{i}.residual.2.weight" in state:
                if in_stage == 0:
                    mult.append(shape(f"encoder.downsamples.{i}.residual.2.weight")[0] // dim)
                in_stage += 1
            else:  # a resample closes the stage
                temporal.append(f"encoder.downsamples.{i}.time_conv.weight" in state)
                res_blocks, in_stage = in_stage, 0
    return WanVAEConfig(version=version, dim=dim, decoder_dim=top // mult[-1], z_dim=z_dim,
                        dim_mult=tuple(mult), num_res_blocks=res_blocks,
                        temporal_downsample=tuple(temporal))
