"""Wan DiT against diffusers' ``WanTransformer3DModel`` on tiny random configurations.

Same weights in, same numbers out, for every variant (T2V; Wan 2.1 I2V with CLIP tokens;
FLF2V with the learned image-token positions; Wan 2.2 TI2V with 48 channels and per-token
timesteps):

* diffusers-layout weights (``save_pretrained`` folder, sharded; and one bare file) go through
  our loader and must give diffusers' output;
* our original-layout weights go through diffusers' own converter
  (``convert_wan_transformer_to_diffusers``) into the diffusers model and must give our output.

Tolerance (fp32): max |ours - diffusers| <= 1e-4 x std(diffusers output).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import randomize_parameters

from comfyui_videodit.model_loaders.wan_dit_loader import load_wan_dit
from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig

diffusers = pytest.importorskip("diffusers")

TOLERANCE = 1e-4
DIM, HEADS, FFN, LAYERS, TEXT_DIM, FREQ_DIM, IMAGE_DIM = 256, 2, 192, 2, 32, 32, 24
GRID = (3, 4, 6)          # latent frames, height, width -> 3 x 2 x 3 = 18 tokens
VARIANTS = {  # model_type: (noise channels, y channels, out channels, CLIP tokens)
    "t2v": (16, 0, 16, 0),
    "i2v": (16, 20, 16, 257),
    "flf2v": (16, 20, 16, 514),
    "ti2v": (48, 0, 48, 0),
}


def diffusers_kwargs(model_type: str) -> dict:
    noise, y, out, clip = VARIANTS[model_type]
    return dict(num_attention_heads=HEADS, attention_head_dim=DIM // HEADS, in_channels=noise + y,
                out_channels=out, text_dim=TEXT_DIM, freq_dim=FREQ_DIM, ffn_dim=FFN,
                num_layers=LAYERS, image_dim=IMAGE_DIM if clip else None,
                added_kv_proj_dim=DIM if clip else None,
                pos_embed_seq_len=514 if model_type == "flf2v" else None)


def our_config(model_type: str) -> WanDiTConfig:
    noise, y, out, _ = VARIANTS[model_type]
    return WanDiTConfig(model_type=model_type, in_dim=noise + y, out_dim=out, dim=DIM, ffn_dim=FFN,
                        num_heads=HEADS, num_layers=LAYERS, text_dim=TEXT_DIM, freq_dim=FREQ_DIM,
                        image_dim=IMAGE_DIM)


_references: dict[str, object] = {}


def random_reference(model_type: str):
    """A diffusers model with random weights, built once per variant (construction is slow)."""
    if model_type not in _references:
        _references[model_type] = _build_reference(model_type)
    return _references[model_type]


def _build_reference(model_type: str):
    model = diffusers.WanTransformer3DModel(**diffusers_kwargs(model_type)).eval()
    return randomize_parameters(model, seed=1)


def random_ours(model_type: str) -> WanDiT:
    return randomize_parameters(WanDiT(our_config(model_type)).eval(), seed=2)


def inputs(model_type: str, batch: int = 1) -> dict:
    """Our forward's inputs; TI2V gets per-token timesteps with the first frame at t=0."""
    noise, y, _, clip = VARIANTS[model_type]
    frames, height, width = GRID
    tokens = frames * (height // 2) * (width // 2)
    gen = torch.Generator().manual_seed(3)
    if model_type == "ti2v":
        timestep = torch.full((batch, tokens), 731.0)
        timestep[:, : tokens // frames] = 0.0
    else:
        timestep = torch.tensor([731.0, 250.0][:batch])
    return dict(x=torch.randn(batch, noise, *GRID, generator=gen), timestep=timestep,
                context=torch.randn(batch, 512, TEXT_DIM, generator=gen),
                y=torch.randn(batch, y, *GRID, generator=gen) if y else None,
                clip_features=torch.randn(batch, clip, IMAGE_DIM, generator=gen) if clip else None)


@torch.no_grad()
def run_reference(model, args: dict) -> torch.Tensor:
    x = args["x"] if args["y"] is None else torch.cat([args["x"], args["y"]], dim=1)
    image = args["clip_features"]
    if image is not None and image.shape[1] == 514:  # diffusers takes FLF2V as [2B, 257, C]
        image = image.reshape(-1, 257, image.shape[-1])
    return model(x, args["timestep"], args["context"], encoder_hidden_states_image=image,
                 return_dict=False)[0]


@torch.no_grad()
def run_ours(model, args: dict) -> torch.Tensor:
    return model(args["x"], args["timestep"], args["context"], y=args["y"],
                 clip_features=args["clip_features"])


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape
    return ((ours.float() - reference.float()).abs().max() / reference.float().std()).item()


@pytest.mark.parametrize("model_type", list(VARIANTS))
def test_diffusers_folder_loads_to_the_same_output(model_type, tmp_path):
    reference = random_reference(model_type)
    folder = tmp_path / "transformer"
    reference.save_pretrained(folder, max_shard_size="400KB")  # several shards + index
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) > 1 and (folder / "config.json").is_file()

    loaded = load_wan_dit(shards[-1])  # one shard picked: the whole folder loads
    assert loaded.config.model_type == model_type
    assert loaded.latent_format == ("wan22" if model_type == "ti2v" else "wan21")
    assert loaded.variant == f"wan-{model_type}-custom"
    assert loaded.compute_dtype == torch.float32
    args = inputs(model_type)
    error = relative_error(run_ours(loaded.network, args), run_reference(reference, args))
    assert error <= TOLERANCE, f"{model_type}: max error {error:.2e} x std"


def test_diffusers_single_file_without_config_loads(tmp_path):
    reference = random_reference("t2v")
    path = tmp_path / "wan_t2v_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
    loaded = load_wan_dit(path)  # heads from the 128-wide head rule: 256 / 128 = 2
    assert loaded.config.num_heads == HEADS
    args = inputs("t2v", batch=2)
    assert relative_error(run_ours(loaded.network, args), run_reference(reference, args)) <= TOLERANCE


# diffusers' single-file converter has no entry for FLF2V's img_emb.emb_pos, so FLF2V's
# original layout is covered by the folder test above (diffusers -> ours) only.
@pytest.mark.parametrize("model_type", ["t2v", "i2v", "ti2v"])
def test_original_layout_through_diffusers_converter(model_type, tmp_path):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    ours = random_ours(model_type)
    original = {f"model.diffusion_model.{k}": v.clone() for k, v in ours.state_dict().items()}
    reference = diffusers.WanTransformer3DModel(**diffusers_kwargs(model_type)).eval()
    reference.load_state_dict(convert_wan_transformer_to_diffusers(dict(original)), strict=True)

    args = inputs(model_type)
    expected = run_reference(reference, args)
    assert relative_error(run_ours(ours, args), expected) <= TOLERANCE

    # and the same file through our loader (prefixed ComfyUI full-checkpoint names)
    path = tmp_path / "wan_original.safetensors"
    save_file(original, path)
    loaded = load_wan_dit(path)
    assert relative_error(run_ours(loaded.network, args), expected) <= TOLERANCE

