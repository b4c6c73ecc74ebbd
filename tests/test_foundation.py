"""Errors, model folders and checkpoint-file reading: the conventions every loader relies on."""
from __future__ import annotations

import struct

import pytest
import torch
from safetensors.torch import save_file

from comfyui_videodit.errors import InputError
from comfyui_videodit.model_loaders.checkpoint_file import read_header
from comfyui_videodit.model_loaders.detect import (KIND_WAN_DIT, KIND_WAN_VAE, detect_kind,
                                                   require_kind)
from comfyui_videodit.nodes._base import videodit_node
from comfyui_videodit.runtime import model_folders


def test_input_error_names_node_input_and_fix():
    @videodit_node("VideoDiTTestOnly", "VideoDiT Test Only", "test")
    class Node:
        FUNCTION = "run"

        def run(self):
            raise InputError("length must be 4k+1, got 80", input="length", fix="use 81")

    with pytest.raises(InputError) as info:
        Node().run()
    assert str(info.value) == "VideoDiT Test Only · length: length must be 4k+1, got 80. Fix: use 81"


def test_model_folder_listing_and_confinement(models_dir):
    (models_dir / "vae" / "sub").mkdir()
    (models_dir / "vae" / "sub" / "a.safetensors").write_bytes(b"")
    (models_dir / "vae" / "notes.txt").write_text("x")
    (models_dir / "text_encoders" / "t5.safetensors").write_bytes(b"")
    (models_dir / "clip").mkdir()
    (models_dir / "clip" / "legacy.safetensors").write_bytes(b"")
    # the user's files, then the bundled demo model's under its own prefix
    assert model_folders.list_files("vae") == ["sub/a.safetensors",
                                               "videodit-demo/demo_vae.safetensors"]
    assert model_folders.list_files("text_encoders") == [
        "legacy.safetensors", "t5.safetensors", "videodit-demo/demo_umt5.safetensors"]
    assert model_folders.resolve("vae", "sub/a.safetensors") == models_dir / "vae/sub/a.safetensors"
    for bad in ("../text_encoders/t5.safetensors", "/etc/passwd", "sub/../../x", "C:\\x"):
        with pytest.raises(InputError, match="not a file name inside"):
            model_folders.resolve("vae", bad)
    with pytest.raises(InputError, match="not found in models/vae"):
        model_folders.resolve("vae", "missing.safetensors")


def test_extra_root_prefix(models_dir, tmp_path):
    extra = tmp_path / "bundled"
    extra.mkdir()
    (extra / "tiny.safetensors").write_bytes(b"")
    model_folders.add_extra_root("loras", extra, "videodit-test")
    try:
        assert "videodit-test/tiny.safetensors" in model_folders.list_files("loras")
        assert model_folders.resolve("loras", "videodit-test/tiny.safetensors") == extra / "tiny.safetensors"
    finally:
        model_folders._extra_roots.pop("loras")


def test_read_header_catches_truncation(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(4, 4), "b": torch.ones(3)}, str(path), metadata={"k": "v"})
    header = read_header(path)
    assert header.shape("a") == (4, 4) and header.tensors["b"].dtype == torch.float32
    assert header.metadata == {"k": "v"}
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_header(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 5) + b"{{{{{")
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_header(tmp_path / "junk.safetensors")


def test_pickle_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))

    path = tmp_path / "evil.pt"
    torch.save({"w": Boom()}, path)
    with pytest.raises(InputError, match="could not be read as plain tensors"):
        read_header(path)


def test_wrong_kind_names_the_right_loader():
    vae_keys = ["encoder.conv1.weight", "decoder.conv1.weight", "conv1.weight"]
    dit_keys = ["model.diffusion_model.patch_embedding.weight",
                "model.diffusion_model.blocks.0.self_attn.q.weight"]
    assert detect_kind(vae_keys) == KIND_WAN_VAE
    assert detect_kind(dit_keys) == KIND_WAN_DIT
    with pytest.raises(InputError, match="is a Wan VAE.*VideoDiT VAE Loader"):
        require_kind(vae_keys, KIND_WAN_DIT, file_name="wan_2.1_vae.safetensors", input="model_name")


def test_clip_vision_layouts_are_recognised():
    from comfyui_videodit.model_loaders.detect import KIND_CLIP_VISION
    layouts = [
        ["vision_model.embeddings.patch_embedding.weight", "vision_model.encoder.layers.0.mlp.fc1.weight"],
        ["visual.conv1.weight", "visual.transformer.resblocks.0.ln_1.weight"],
        ["visual.patch_embedding.weight", "visual.transformer.0.attn.to_qkv.weight"],
        ["embeddings.patch_embedding.weight", "encoder.layers.0.mlp.fc1.weight"],
    ]
    for keys in layouts:
        assert detect_kind(keys) == KIND_CLIP_VISION, keys
