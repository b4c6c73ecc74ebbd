"""Key names of the Wan DiT: diffusers layout -> original layout (what ``WanDiT`` uses).

Original (Wan repo, ComfyUI single files)         diffusers (``WanTransformer3DModel``)
  patch_embedding                                   patch_embedding
  text_embedding.0 / .2                             condition_embedder.text_embedder.linear_1 / _2
  time_embedding.0 / .2                             condition_embedder.time_embedder.linear_1 / _2
  time_projection.1                                 condition_embedder.time_proj
  img_emb.proj.0 / .1 / .3 / .4, img_emb.emb_pos    condition_embedder.image_embedder.norm1 /
                                                    ff.net.0.proj / ff.net.2 / norm2, pos_embed
  blocks.N.self_attn.{q,k,v,o,norm_q,norm_k}        blocks.N.attn1.{to_q,to_k,to_v,to_out.0,norm_q,norm_k}
  blocks.N.cross_attn.{...,k_img,v_img,norm_k_img}  blocks.N.attn2.{...,add_k_proj,add_v_proj,norm_added_k}
  blocks.N.norm3 (cross-attention norm)             blocks.N.norm2
  blocks.N.ffn.0 / .2                               blocks.N.ffn.net.0.proj / ffn.net.2
  blocks.N.modulation                               blocks.N.scale_shift_table
  head.head, head.modulation                        proj_out, scale_shift_table
  vace_patch_embedding (VACE models)                vace_patch_embedding
  vace_blocks.N.* (as blocks.N.*)                   vace_blocks.N.* (as blocks.N.*)
  vace_blocks.N.before_proj / after_proj            vace_blocks.N.proj_in / proj_out

``norm_added_q`` (present in some diffusers exports, unused by the network) is dropped.
"""
from __future__ import annotations

import re

_GLOBAL = {
    "condition_embedder.text_embedder.linear_1.": "text_embedding.0.",
    "condition_embedder.text_embedder.linear_2.": "text_embedding.2.",
    "condition_embedder.time_embedder.linear_1.": "time_embedding.0.",
    "condition_embedder.time_embedder.linear_2.": "time_embedding.2.",
    "condition_embedder.time_proj.": "time_projection.1.",
    "condition_embedder.image_embedder.norm1.": "img_emb.proj.0.",
    "condition_embedder.image_embedder.ff.net.0.proj.": "img_emb.proj.1.",
    "condition_embedder.image_embedder.ff.net.2.": "img_emb.proj.3.",
    "condition_embedder.image_embedder.norm2.": "img_emb.proj.4.",
    "proj_out.": "head.head.",
}
_GLOBAL_EXACT = {
    "condition_embedder.image_embedder.pos_embed": "img_emb.emb_pos",
    "scale_shift_table": "head.modulation",
}
_BLOCK = {
    "attn1.to_q.": "self_attn.q.", "attn1.to_k.": "self_attn.k.", "attn1.to_v.": "self_attn.v.",
    "attn1.to_out.0.": "self_attn.o.", "attn1.norm_q.": "self_attn.norm_q.",
    "attn1.norm_k.": "self_attn.norm_k.",
    "attn2.to_q.": "cross_attn.q.", "attn2.to_k.": "cross_attn.k.", "attn2.to_v.": "cross_attn.v.",
    "attn2.to_out.0.": "cross_attn.o.", "attn2.norm_q.": "cross_attn.norm_q.",
    "attn2.norm_k.": "cross_attn.norm_k.", "attn2.add_k_proj.": "cross_attn.k_img.",
    "attn2.add_v_proj.": "cross_attn.v_img.", "attn2.norm_added_k.": "cross_attn.norm_k_img.",
    "norm2.": "norm3.",
    "ffn.net.0.proj.": "ffn.0.", "ffn.net.2.": "ffn.2.",
}
_BLOCK_EXACT = {"scale_shift_table": "modulation"}
_VACE_BLOCK = {"proj_in.": "before_proj.", "proj_out.": "after_proj."}
_DROPPED = ("norm_added_q.",)
_BLOCK_KEY = re.compile(r"^(blocks|vace_blocks)\.(\d+)\.(.+)$")

DIFFUSERS_MARKERS = ("condition_embedder.", "attn1.to_q.", "proj_out.")


def is_diffusers_layout(keys) -> bool:
    return any(marker in key for key in keys for marker in DIFFUSERS_MARKERS)


def diffusers_to_original(key: str) -> str | None:
    """The original name of a diffusers key; None for keys the network does not use.

    Keys outside the table (an unknown extra) are returned unchanged so loading reports them.
    """
    if any(fragment in key for fragment in _DROPPED):
        return None
    block = _BLOCK_KEY.match(key)
    if block:
        stack, index, rest = block.groups()
        if rest in _BLOCK_EXACT:
            return f"{stack}.{index}.{_BLOCK_EXACT[rest]}"
        table = {**_BLOCK, **_VACE_BLOCK} if stack == "vace_blocks" else _BLOCK
        for old, new in table.items():
            if rest.startswith(old):
                return f"{stack}.{index}.{new}{rest[len(old):]}"
        return key
    if key in _GLOBAL_EXACT:
        return _GLOBAL_EXACT[key]
    for old, new in _GLOBAL.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key
