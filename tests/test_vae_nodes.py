"""VAE nodes and loader behaviour: LATENT tagging, version mismatch errors, frame/size checks,
dtypes, chunked progress and Cancel, detection of the file kind."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from comfyui_videodit.errors import InputError, Interrupted
from comfyui_videodit.model_loaders.wan_vae_loader import (LoadedVAE, snap_frame_count,
                                                          snap_size)
from comfyui_videodit.networks.wan_vae import WanVAE, WanVAEConfig
from comfyui_videodit.nodes.vae import VideoDiTVAEDecode, VideoDiTVAEEncode, VideoDiTVAELoader
from comfyui_videodit.runtime import progress as progress_module
from comfyui_videodit.runtime.hooks import host_hooks


pytestmark = pytest.mark.usefixtures("one_thread")


def write_vae(folder, name: str, cfg: WanVAEConfig, dtype=torch.float32):
    torch.manual_seed(0)
    net = WanVAE(cfg)
    state = {k: (v * 0.5).to(dtype).contiguous() for k, v in net.state_dict().items()}
    save_file(state, folder / name)
    return folder / name


@pytest.fixture
def vae_files(models_dir):
    write_vae(models_dir / "vae", "tiny21.safetensors", WanVAEConfig("2.1", dim=8, decoder_dim=8, z_dim=16))
    write_vae(models_dir / "vae", "tiny22.safetensors", WanVAEConfig("2.2", dim=8, decoder_dim=8, z_dim=48),
              dtype=torch.bfloat16)
    return models_dir


def load(name, dtype="fp32") -> LoadedVAE:
    return VideoDiTVAELoader().load(name, dtype)[0]


def test_loader_node_lists_and_detects_versions(vae_files):
    assert {"tiny21.safetensors", "tiny22.safetensors"} <= set(
        VideoDiTVAELoader.INPUT_TYPES()["required"]["vae_name"][0])
    v21, v22 = load("tiny21.safetensors"), load("tiny22.safetensors")
    assert (v21.latent_format.name, v21.latent_format.channels, v21.latent_format.spatial_factor) == \
        ("wan21", 16, 8)
    assert (v22.latent_format.name, v22.latent_format.channels, v22.latent_format.spatial_factor) == \
        ("wan22", 48, 16)
    assert v22.latent_format.mean[0] == -0.2289  # the real Wan 2.2 statistics
    assert v22.dtype == torch.float32 and next(v22.network.parameters()).dtype == torch.float32


def test_encode_decode_nodes_round_trip_shapes_and_tags(vae_files):
    vae = load("tiny22.safetensors")
    images = torch.rand(5, 32, 48, 3)
    latent = VideoDiTVAEEncode().encode(vae, images)[0]
    assert latent["latent_format"] == "wan22"
    assert latent["samples"].shape == (1, 48, 2, 2, 3) and latent["samples"].dtype == torch.float32
    frames = VideoDiTVAEDecode().decode(vae, latent)[0]
    assert frames.shape == (5, 32, 48, 3) and frames.device.type == "cpu"
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_decode_refuses_latent_of_the_other_version(vae_files):
    vae21 = load("tiny21.safetensors")
    latent = {"samples": torch.zeros(1, 48, 2, 2, 2), "latent_format": "wan22"}
    with pytest.raises(InputError) as err:
        VideoDiTVAEDecode().decode(vae21, latent)
    text = str(err.value)
    assert "VideoDiT VAE Decode" in text and "latent" in text
    assert "Wan 2.2 VAE (48 channels)" in text and "wan2.2_vae.safetensors" in text


def test_decode_accepts_untagged_latent_with_matching_channels(vae_files):
    vae21 = load("tiny21.safetensors")
    frames = VideoDiTVAEDecode().decode(vae21, {"samples": torch.zeros(1, 16, 2, 2, 2)})[0]
    assert frames.shape == (5, 16, 16, 3)
    with pytest.raises(InputError, match="48 channels.*expects 16"):
        VideoDiTVAEDecode().decode(vae21, {"samples": torch.zeros(1, 48, 2, 2, 2)})


def test_frame_count_and_size_errors_name_the_fix(vae_files):
    vae = load("tiny21.safetensors")
    with pytest.raises(InputError, match=r"4k\+1 frames, got 8.*use 9 frames"):
        VideoDiTVAEEncode().encode(vae, torch.rand(8, 16, 16, 3))
    with pytest.raises(InputError, match=r"multiples of 8.*got 20x16.*resize to (24|16)x16"):
        VideoDiTVAEEncode().encode(vae, torch.rand(5, 16, 20, 3))
    assert [snap_frame_count(n) for n in (1, 2, 4, 80, 81)] == [1, 1, 5, 81, 81]
    assert snap_size(100, 16) == 96 and snap_size(3, 16) == 16
    with pytest.raises(InputError, match="tile_overlap.*smaller than the tile size"):
        VideoDiTVAEDecode().decode(vae, {"samples": torch.zeros(1, 16, 1, 4, 4)}, True, 64, 64)


def test_loader_refuses_a_file_of_another_kind(models_dir):
    save_file({"patch_embedding.weight": torch.zeros(4, 16, 1, 2, 2),
               "blocks.0.self_attn.q.weight": torch.zeros(4, 4)}, models_dir / "vae" / "dit.safetensors")
    with pytest.raises(InputError, match="Wan diffusion model.*VideoDiT Model Loader"):
        load("dit.safetensors")


def test_chunks_report_progress_and_cancel_between_chunks(vae_files, monkeypatch):
    vae = load("tiny21.safetensors")
    updates = []
    original_update = progress_module.Progress.update

    def counting_update(self, n=1, preview=None):
        updates.append(self.total)
        if len(updates) == 2:
            progress_module.request_interrupt()
        original_update(self, n, preview)

    monkeypatch.setattr(progress_module.Progress, "update", counting_update)
    with pytest.raises(Interrupted):
        vae.decode(torch.zeros(1, 16, 4, 2, 2), hooks=host_hooks())
    assert updates == [4, 4]  # one bar step per latent frame; stopped after the second
    progress_module.clear_interrupt()


def test_chunked_decode_equals_one_pass_over_all_frames(vae_files):
    """Carrying the causal cache makes chunked decoding causal: earlier frames never change
    when more latent frames follow."""
    vae = load("tiny21.safetensors")
    torch.manual_seed(5)
    latent = torch.randn(1, 16, 3, 2, 2)
    short = vae.decode(latent[:, :, :2])
    longer = vae.decode(latent)
    assert torch.equal(longer[:5], short)


def test_half_precision_weights_run(vae_files):
    vae = load("tiny22.safetensors", dtype="bf16")
    assert next(vae.network.parameters()).dtype == torch.bfloat16
    latent = vae.encode(torch.rand(1, 16, 16, 3))
    assert latent.dtype == torch.float32 and torch.isfinite(latent).all()
    with pytest.raises(InputError, match="unknown dtype"):
        load("tiny22.safetensors", dtype="fp64")
