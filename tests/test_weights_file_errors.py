"""Broken or hostile weights files get one clear message naming the file, tensor and fix."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from comfyui_videodit.errors import InputError
from comfyui_videodit.model_loaders.checkpoint_file import read_header
from comfyui_videodit.model_loaders.wan_dit_loader import load_wan_dit

from test_dit_loader import random_state


def _write_raw(path, header: dict, data: bytes):
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_index_naming_shards_outside_its_folder_is_refused(tmp_path):
    state = random_state()
    folder = tmp_path / "models"
    folder.mkdir()
    save_file(state, folder / "part-1.safetensors")
    save_file({"x": torch.zeros(1)}, tmp_path / "secret.safetensors")
    for outside in ("../secret.safetensors", str(tmp_path / "secret.safetensors"),
                    "sub/../../secret.safetensors"):
        (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
            "a": "part-1.safetensors", "b": outside}}))
        with pytest.raises(InputError, match=r"model_name: model.safetensors.index.json names shard "
                                             r"files outside its folder"):
            load_wan_dit(folder / "part-1.safetensors")


def test_header_shapes_that_disagree_with_byte_offsets_are_refused(tmp_path):
    path = tmp_path / "lying.safetensors"
    _write_raw(path, {"w": {"dtype": "F32", "shape": [1000, 1000], "data_offsets": [0, 16]}},
               bytes(16))
    with pytest.raises(InputError, match=r"lying.safetensors is not a valid safetensors file.*"
                                         r"tensor 'w' has shape \[1000, 1000\] \(4000000 bytes "
                                         r"as F32\) but 16 bytes"):
        read_header(path)


@pytest.mark.parametrize("metadata", [["a"], "text", 3])
def test_metadata_that_is_not_an_object_is_refused(tmp_path, metadata):
    path = tmp_path / "meta.safetensors"
    _write_raw(path, {"__metadata__": metadata,
                      "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8))
    with pytest.raises(InputError, match=r"meta.safetensors.*__metadata__ is a"):
        read_header(path, input="vae_name")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_or_bool_weights_are_refused_by_name(tmp_path, dtype):
    state = random_state()
    key = sorted(k for k in state if k.endswith("ffn.0.weight"))[0]
    state[key] = torch.ones(state[key].shape, dtype=dtype)
    path = tmp_path / "ints.safetensors"
    save_file(state, path)
    with pytest.raises(InputError) as caught:
        load_wan_dit(path)
    assert f"stores '{key}' as {str(dtype).replace('torch.', '')}, but it must hold " \
           "floating-point weights" in str(caught.value)
