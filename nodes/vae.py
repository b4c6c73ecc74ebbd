"""Nodes of the 'vae' stage: load a Wan VAE, encode frames to a LATENT, decode a LATENT to frames."""
from __future__ import annotations

from ._base import videodit_node

_TILING_INPUTS = {
    "tiled": ("BOOLEAN", {
        "default": False,
        "tooltip": "Split each frame into overlapping tiles to save memory on large frames. "
                   "Tiles are blended across the overlap; off gives the exact result."}),
    "tile_size": ("INT", {
        "default": 512, "min": 64, "max": 4096, "step": 16,
        "tooltip": "Tile width and height in pixels (rounded down to the VAE's 8/16-pixel grid)."}),
    "tile_overlap": ("INT", {
        "default": 128, "min": 0, "max": 2048, "step": 16,
        "tooltip": "Pixels shared by neighbouring tiles and blended linearly; more hides seams "
                   "better and costs more time. Must be smaller than tile_size."}),
}


def _tiling(tiled: bool, tile_size: int, tile_overlap: int):
    from ..model_loaders.wan_vae_loader import Tiling

    return Tiling(size=int(tile_size), overlap=int(tile_overlap)) if tiled else None


def _require_vae(vae):
    from ..errors import InputError
    from ..model_loaders.wan_vae_loader import LoadedVAE

    if not isinstance(vae, LoadedVAE):
        raise InputError(f"expected a VideoDiT VAE, got {type(vae).__name__}", input="vae",
                         fix="connect the output of VideoDiT VAE Loader")
    return vae


@videodit_node("VideoDiTVAELoader", "VideoDiT VAE Loader", "loaders")
class VideoDiTVAELoader:
    DESCRIPTION = ("Loads a Wan video VAE: Wan 2.1 (16 latent channels, 8x smaller frames; also "
                   "used by Wan 2.2 A14B) or Wan 2.2 (48 channels, 16x; for TI2V-5B). The version "
                   "is read from the file's contents. Reads ComfyUI's files "
                   "(wan_2.1_vae.safetensors, wan2.2_vae.safetensors), Wan's .pth and diffusers' "
                   "AutoencoderKLWan weights.")
    RETURN_TYPES = ("VIDEODIT_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The Wan VAE, for VideoDiT VAE Encode / Decode, Empty Latent and Image To "
                       "Video.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from ..model_loaders.wan_vae_loader import DTYPE_CHOICES
        from ..runtime.model_folders import list_files

        return {"required": {
            "vae_name": (list_files("vae"), {
                "tooltip": "VAE file from models/vae, e.g. wan_2.1_vae.safetensors or "
                           "wan2.2_vae.safetensors."}),
            "dtype": (list(DTYPE_CHOICES), {
                "default": "default",
                "tooltip": "Weight precision. default: bf16 on GPUs that support it, else fp32. "
                           "fp16 can overflow in this VAE; prefer bf16 or fp32."}),
        }}

    def load(self, vae_name, dtype):
        from ..model_loaders.wan_vae_loader import INPUT, load_wan_vae
        from ..runtime.devices import compute_device
        from ..runtime.memory import for_the_call
        from ..runtime.model_folders import resolve

        # On the GPU only while it encodes or decodes, unless everything fits.
        return (load_wan_vae(resolve("vae", vae_name, input=INPUT), dtype=dtype,
                             device=compute_device(), place=for_the_call),)


@videodit_node("VideoDiTVAEEncode", "VideoDiT VAE Encode", "vae")
class VideoDiTVAEEncode:
    DESCRIPTION = ("Encodes frames into a Wan latent, causally in chunks (the first frame, then "
                   "groups of 4), so memory does not grow with the clip length. The clip must "
                   "have 4k+1 frames (1, 5, ..., 81) and a size on the VAE's grid (multiples of "
                   "8 for Wan 2.1, 16 for Wan 2.2); otherwise it stops with an error naming the "
                   "nearest valid values - nothing is cropped silently.")
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Raw Wan latent [B, C, (frames-1)/4+1, H/8, W/8] (H/16 for Wan 2.2), "
                       "tagged with the VAE version; interchangeable with ComfyUI's Wan latents.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VIDEODIT_VAE", {"tooltip": "From VideoDiT VAE Loader."}),
            "images": ("IMAGE", {
                "tooltip": "Frames to encode (frames as the batch). Needs 4k+1 frames and a width "
                           "and height on the VAE's grid; wrong counts or sizes stop with an "
                           "error giving the nearest valid values."}),
            **_TILING_INPUTS,
        }}

    def encode(self, vae, images, tiled=False, tile_size=512, tile_overlap=128):
        from ..core.latent_formats import LATENT_FORMAT_KEY
        from ..runtime.hooks import host_hooks

        vae = _require_vae(vae)
        samples = vae.encode(images, tile=_tiling(tiled, tile_size, tile_overlap),
                             hooks=host_hooks())
        return ({"samples": samples, LATENT_FORMAT_KEY: vae.latent_format.name},)


@videodit_node("VideoDiTVAEDecode", "VideoDiT VAE Decode", "vae")
class VideoDiTVAEDecode:
    DESCRIPTION = ("Decodes a Wan latent into frames, one latent frame at a time (4 video frames "
                   "each after the first). Refuses a latent made by the other Wan VAE version "
                   "and says which VAE file to load. Accepts latents from ComfyUI's own Wan "
                   "nodes when the channel count fits.")
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Decoded frames [frames, H, W, 3], 0..1; for a batch of videos the "
                       "videos follow one another.",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("VIDEODIT_VAE", {"tooltip": "From VideoDiT VAE Loader; must be the VAE "
                                                "version the latent was made with."}),
            "latent": ("LATENT", {"tooltip": "Video latent from a sampler or VAE Encode."}),
            **_TILING_INPUTS,
        }}

    def decode(self, vae, latent, tiled=False, tile_size=512, tile_overlap=128):
        from ..errors import InputError
        from ..runtime.hooks import host_hooks
        from .memory import check_decode_fits

        vae = _require_vae(vae)
        if not isinstance(latent, dict) or "samples" not in latent:
            raise InputError("expected a LATENT (a dict with 'samples')", input="latent",
                             fix="connect a LATENT output")
        check_decode_fits(vae, vae.check_latent(latent), int(tile_size) if tiled else None)
        return (vae.decode(latent, tile=_tiling(tiled, tile_size, tile_overlap),
                           hooks=host_hooks()),)


NODE_CLASSES: list[type] = [VideoDiTVAELoader, VideoDiTVAEEncode, VideoDiTVAEDecode]
