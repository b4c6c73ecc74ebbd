"""umT5 encoder: parity with transformers, every file layout, fp8, the prompt cache, native input.

Tiny random umT5 models with the real key layouts; the tokenizer is a SentencePiece model
trained in the test (real tokenizer files cannot be downloaded here).
"""
from __future__ import annotations

import io
import json
import logging

import pytest
import torch
from safetensors.torch import save_file

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from comfyui_videodit.errors import InputError  # noqa: E402
from comfyui_videodit.nodes.text import (VideoDiTNativeConditioning, VideoDiTTextEncode,  # noqa: E402
                                         VideoDiTTextEncoderLoader)
from comfyui_videodit.core.prompt_cache import PromptCache  # noqa: E402
from comfyui_videodit.runtime.prompt_cache import PROMPT_CACHE  # noqa: E402

CORPUS = """A cat walks on the grass in a sunny meadow, realistic style, golden hour lighting.
Кошка идёт по траве в солнечный день, камера медленно движется вперёд.
一只猫在草地上行走，电影质感，黄金时刻的光线，镜头缓慢推进。
قطة تمشي على العشب في يوم مشمس والكاميرا تتحرك ببطء نحو الأمام.
"""
PROMPT = "A cat walks on the grass, камера движется, 一只猫"
# Relative tolerance asked of every fp32 comparison: max |ours - reference| <= 1e-4 * std.
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def spiece() -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 10), model_writer=model, vocab_size=300,
        hard_vocab_limit=False, model_type="unigram", character_coverage=1.0, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return model.getvalue()


@pytest.fixture(scope="module")
def reference(spiece):
    """A transformers UMT5EncoderModel with weights large enough to make every path matter."""
    import sentencepiece as spm

    vocab = spm.SentencePieceProcessor(model_proto=spiece).get_piece_size()
    config = transformers.UMT5Config(vocab_size=vocab, d_model=64, d_kv=16, d_ff=96, num_layers=3,
                                     num_heads=4, relative_attention_num_buckets=32,
                                     feed_forward_proj="gated-gelu")
    torch.manual_seed(1)
    model = transformers.UMT5EncoderModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.copy_(1 + 0.2 * torch.randn_like(param))
            elif "relative_attention_bias" in name:
                param.copy_(torch.randn_like(param))
            else:
                param.copy_(torch.randn_like(param) * param.shape[-1] ** -0.5)
    return model


def reference_hidden(reference, ids: list[int]) -> torch.Tensor:
    """Wan's way: pad to 512 with an attention mask, keep the real rows."""
    input_ids = torch.zeros(1, 512, dtype=torch.long)
    mask = torch.zeros(1, 512, dtype=torch.long)
    input_ids[0, :len(ids)] = torch.tensor(ids)
    mask[0, :len(ids)] = 1
    with torch.no_grad():
        return reference(input_ids=input_ids, attention_mask=mask).last_hidden_state[0, :len(ids)]


def reference_ids(tmp_path, spiece, text: str) -> list[int]:
    from comfyui_videodit.model_loaders.tokenizer import clean_prompt

    folder = tmp_path / "hf_tokenizer"
    folder.mkdir(exist_ok=True)
    (folder / "spiece.model").write_bytes(spiece)
    tokenizer = transformers.T5Tokenizer.from_pretrained(str(folder), extra_ids=0)
    return tokenizer(clean_prompt(text), truncation=True, max_length=512).input_ids


def comfy_state(reference, spiece) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    state["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8)
    return state


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.std())


@pytest.fixture(autouse=True)
def _fresh_cache():
    PROMPT_CACHE.clear()
    yield
    PROMPT_CACHE.clear()


def load(name: str, dtype: str = "fp32"):
    return VideoDiTTextEncoderLoader().load(name, dtype, "cpu")[0]


def encode(encoder, positive=PROMPT, negative=""):
    return VideoDiTTextEncode().encode(encoder, positive, negative)[0]


def test_network_matches_transformers_umt5(reference):
    from comfyui_videodit.networks.umt5 import UMT5Config, UMT5Encoder

    config = reference.config
    ours = UMT5Encoder(UMT5Config(vocab_size=config.vocab_size, d_model=64, d_kv=16, d_ff=96,
                                  num_layers=3, num_heads=4)).eval()
    state = {k: v for k, v in reference.state_dict().items() if k != "encoder.embed_tokens.weight"}
    ours.load_state_dict(state, strict=True)
    ids = torch.randint(3, config.vocab_size, (2, 300))
    mask = torch.ones_like(ids)
    mask[1, 170:] = 0  # a padded second prompt exercises the key mask
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state * mask[..., None]
        got = ours(ids, mask)
        alone = ours(ids[1:, :170])[0]
    err = relative_error(got, expected)
    print(f"umT5 vs transformers: max abs err = {err:.2e} x std")
    assert err <= REL_TOL
    assert torch.all(got[1, 170:] == 0)
    # Encoding at the true length (what the node does) equals the padded, masked pass.
    assert relative_error(alone, got[1, :170]) <= REL_TOL


def test_comfyui_single_file_with_embedded_tokenizer(models_dir, tmp_path, reference, spiece):
    save_file(comfy_state(reference, spiece), models_dir / "text_encoders" / "umt5_tiny.safetensors")
    encoder = load("umt5_tiny.safetensors")
    assert any("embedded" in note for note in encoder.notes)
    cond = encode(encoder, PROMPT, "")
    ids = reference_ids(tmp_path, spiece, PROMPT)
    n = len(ids)
    assert cond.positive.shape == (1, 512, 64) and cond.positive_tokens == n
    assert relative_error(cond.positive[0, :n], reference_hidden(reference, ids)) <= REL_TOL
    assert torch.all(cond.positive[0, n:] == 0)
    assert cond.negative_tokens == 1  # the empty negative prompt is the EOS token alone
    assert relative_error(cond.negative[0, :1], reference_hidden(reference, [1])) <= REL_TOL
    # The tokenizer round-trips: what the loader read out is the exact model we embedded.
    assert encoder.tokenizer.model_proto == spiece


def test_hugging_face_folder_layout(models_dir, tmp_path, reference, spiece):
    folder = models_dir / "text_encoders" / "umt5-tiny"
    reference.save_pretrained(folder)
    (folder / "spiece.model").write_bytes(spiece)
    names = [p.name for p in folder.iterdir()]
    assert "config.json" in names and "model.safetensors" in names
    cond = encode(load("umt5-tiny/model.safetensors"))
    ids = reference_ids(tmp_path, spiece, PROMPT)
    assert relative_error(cond.positive[0, :len(ids)], reference_hidden(reference, ids)) <= REL_TOL


def test_sharded_diffusers_layout_with_sibling_tokenizer_folder(models_dir, tmp_path, reference, spiece):
    root = models_dir / "text_encoders" / "Wan-Diffusers"
    (root / "text_encoder").mkdir(parents=True)
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "spiece.model").write_bytes(spiece)
    state = reference.state_dict()
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2],
              "model-00002-of-00002.safetensors": keys[1::2]}
    for shard, shard_keys in shards.items():
        save_file({k: state[k].clone() for k in shard_keys}, root / "text_encoder" / shard)
    index = {"weight_map": {k: shard for shard, ks in shards.items() for k in ks}}
    (root / "text_encoder" / "model.safetensors.index.json").write_text(json.dumps(index))
    cond = encode(load("Wan-Diffusers/text_encoder/model-00002-of-00002.safetensors"))
    ids = reference_ids(tmp_path, spiece, PROMPT)
    assert relative_error(cond.positive[0, :len(ids)], reference_hidden(reference, ids)) <= REL_TOL


def test_original_wan_pth_layout(models_dir, tmp_path, reference, spiece):
    renames = {"layer.0.SelfAttention.q.": "attn.q.", "layer.0.SelfAttention.k.": "attn.k.",
               "layer.0.SelfAttention.v.": "attn.v.", "layer.0.SelfAttention.o.": "attn.o.",
               "layer.0.SelfAttention.relative_attention_bias.": "pos_embedding.embedding.",
               "layer.0.layer_norm.": "norm1.", "layer.1.layer_norm.": "norm2.",
               "layer.1.DenseReluDense.wi_0.": "ffn.gate.0.", "layer.1.DenseReluDense.wi_1.": "ffn.fc1.",
               "layer.1.DenseReluDense.wo.": "ffn.fc2."}
    wan = {}
    for key, value in reference.state_dict().items():
        if key == "encoder.embed_tokens.weight":
            continue
        new = key.replace("shared.", "token_embedding.").replace("encoder.final_layer_norm.", "norm.")
        new = new.replace("encoder.block.", "blocks.")
        for old, replacement in renames.items():
            new = new.replace(old, replacement)
        wan[new] = value.clone()
    assert "blocks.0.ffn.gate.0.weight" in wan and "token_embedding.weight" in wan
    torch.save(wan, models_dir / "text_encoders" / "models_t5_umt5-xxl-enc-bf16.pth")
    tokenizer_dir = models_dir / "text_encoders" / "google" / "umt5-xxl"
    tokenizer_dir.mkdir(parents=True)
    (tokenizer_dir / "spiece.model").write_bytes(spiece)
    encoder = load("models_t5_umt5-xxl-enc-bf16.pth")
    assert any("original Wan" in note for note in encoder.notes)
    cond = encode(encoder)
    ids = reference_ids(tmp_path, spiece, PROMPT)
    assert relative_error(cond.positive[0, :len(ids)], reference_hidden(reference, ids)) <= REL_TOL


@pytest.mark.parametrize("scaled", [False, True], ids=["fp8_e4m3fn", "fp8_scaled"])
def test_fp8_files_are_dequantized(models_dir, reference, spiece, scaled):
    state = comfy_state(reference, spiece)
    dequantized = dict(state)
    for key in list(state):
        if key.endswith(".weight") and state[key].ndim == 2 and "relative_attention" not in key \
                and "shared" not in key and "embed_tokens" not in key:
            weight = state[key]
            scale = weight.abs().max() / 448 if scaled else torch.tensor(1.0)
            fp8 = (weight / scale).to(torch.float8_e4m3fn)
            state[key] = fp8
            dequantized[key] = fp8.float() * scale
            if scaled:
                state[key.replace(".weight", ".scale_weight")] = scale.reshape(())
    if scaled:
        state["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    save_file(state, models_dir / "text_encoders" / "umt5_fp8.safetensors")
    save_file(dequantized, models_dir / "text_encoders" / "umt5_dequantized.safetensors")
    fp8_encoder = load("umt5_fp8.safetensors")
    assert any("fp8" in note and "dequantized" in note for note in fp8_encoder.notes)
    got = encode(fp8_encoder).positive
    expected = encode(load("umt5_dequantized.safetensors")).positive
    assert relative_error(got, expected) <= REL_TOL


def test_missing_tokenizer_says_where_to_put_spiece_model(models_dir, reference, spiece):
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    folder = models_dir / "text_encoders"
    save_file(state, folder / "umt5_no_tok.safetensors")
    with pytest.raises(InputError) as err:
        load("umt5_no_tok.safetensors")
    message = str(err.value)
    assert "VideoDiT Text Encoder Loader" in message and "text_encoder_name" in message
    assert "umt5_no_tok.spiece.model" in message
    (folder / "umt5_no_tok.spiece.model").write_bytes(spiece)
    assert load("umt5_no_tok.safetensors").tokenizer.model_proto == spiece


def test_wrong_files_are_refused_clearly(models_dir, reference, spiece):
    folder = models_dir / "text_encoders"
    t5 = {k: v.clone() for k, v in comfy_state(reference, spiece).items()
          if not ("relative_attention_bias" in k and not k.startswith("encoder.block.0."))}
    save_file(t5, folder / "t5xxl_tiny.safetensors")
    with pytest.raises(InputError, match="not umT5.*Fix: use umt5_xxl"):
        load("t5xxl_tiny.safetensors")
    save_file({"encoder.conv1.weight": torch.zeros(1), "decoder.conv1.weight": torch.zeros(1)},
              folder / "wan_2.1_vae.safetensors")
    with pytest.raises(InputError, match="is a Wan VAE.*VideoDiT VAE Loader"):
        load("wan_2.1_vae.safetensors")
    with pytest.raises(InputError, match="dtype"):
        VideoDiTTextEncoderLoader().load("t5xxl_tiny.safetensors", "fp64", "cpu")


def test_default_dtype_is_bf16_and_close_to_fp32(models_dir, reference, spiece):
    save_file(comfy_state(reference, spiece), models_dir / "text_encoders" / "umt5_tiny.safetensors")
    bf16 = load("umt5_tiny.safetensors", "default")
    assert bf16.dtype == torch.bfloat16
    assert next(bf16.model.module.parameters()).dtype == torch.bfloat16
    got = encode(bf16)
    n = got.positive_tokens
    expected = encode(load("umt5_tiny.safetensors")).positive[0, :n]
    assert got.positive.dtype == torch.float32
    # bf16 rounding only (transformers' own bf16 run lands at the same ~3% mean error).
    assert float((got.positive[0, :n] - expected).abs().mean() / expected.std()) < 0.06


def test_repeated_prompt_is_served_from_cache(models_dir, reference, spiece, monkeypatch):
    save_file(comfy_state(reference, spiece), models_dir / "text_encoders" / "umt5_tiny.safetensors")
    encoder = load("umt5_tiny.safetensors")
    calls = []
    forward = type(encoder.model.module).forward
    monkeypatch.setattr(type(encoder.model.module), "forward",
                        lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    first = encode(encoder, PROMPT, "blurry")
    assert len(calls) == 2
    second = encode(encoder, PROMPT + "  ", "blurry")  # same text after Wan's cleaning
    assert len(calls) == 2, "a cached prompt must not run the network"
    assert torch.equal(first.positive, second.positive) and torch.equal(first.negative, second.negative)
    # A reloaded encoder (same file) hits too: the key is the file's identity, not the object.
    assert torch.equal(encode(load("umt5_tiny.safetensors"), PROMPT, "blurry").positive, first.positive)
    assert len(calls) == 2
    encode(encoder, "a different prompt", "blurry")
    assert len(calls) == 3


def test_disk_cache_survives_a_new_process_cache(models_dir, tmp_path, reference, spiece, monkeypatch):
    from comfyui_videodit.samplers.text_conditioning import encode_prompt

    save_file(comfy_state(reference, spiece), models_dir / "text_encoders" / "umt5_tiny.safetensors")
    encoder = load("umt5_tiny.safetensors")
    disk = tmp_path / "prompt_cache"
    first = encode_prompt(encoder, PROMPT, cache=PromptCache(), disk_dir=disk)
    assert not first.cached and len(list(disk.rglob("*.safetensors"))) == 1
    monkeypatch.setattr(encoder, "run", lambda ids: pytest.fail("network ran on a disk hit"))
    again = encode_prompt(encoder, PROMPT, cache=PromptCache(), disk_dir=disk)
    assert again.cached and torch.equal(again.embedding, first.embedding)
    # The node's switch uses $VIDEODIT_PROMPT_CACHE_DIR.
    monkeypatch.setenv("VIDEODIT_PROMPT_CACHE_DIR", str(disk))
    PROMPT_CACHE.clear()
    cond = VideoDiTTextEncode().encode(encoder, PROMPT, PROMPT, True)[0]
    assert torch.equal(cond.positive[0, :first.embedding.shape[0]], first.embedding)


def test_memory_cache_is_bounded():
    cache = PromptCache(max_entries=3, max_bytes=10_000)
    for i in range(5):
        cache.put(f"k{i}", torch.zeros(10, 10))
    assert len(cache) == 3 and cache.get("k0") is None and cache.get("k4") is not None
    cache.put("big", torch.zeros(50, 50))  # 10 kB: evicts everything older to fit the budget
    assert len(cache) == 1


def test_native_conditioning_adapter():
    cond = torch.zeros(1, 520, 4096)
    cond[0, :10] = torch.randn(10, 4096)
    neg = torch.zeros(1, 512, 4096)
    neg[0, :3] = 1.0
    out = VideoDiTNativeConditioning().convert([[cond, {"pooled_output": None}]],
                                               [[neg, {"pooled_output": None}]])[0]
    assert out.positive.shape == (1, 512, 4096) and out.negative.shape == (1, 512, 4096)
    assert out.positive_tokens == 10 and out.negative_tokens == 3
    assert torch.equal(out.positive[0, :10], cond[0, :10]) and torch.all(out.positive[0, 10:] == 0)
    assert VideoDiTNativeConditioning().convert([[cond, {}]])[0].negative is None


def test_native_conditioning_refuses_what_it_cannot_convert(caplog):
    node = VideoDiTNativeConditioning()
    with pytest.raises(InputError, match="width 768.*type 'wan'"):
        node.convert([[torch.zeros(1, 77, 768), {}]])
    with pytest.raises(InputError, match="2 entries"):
        node.convert([[torch.zeros(1, 512, 4096), {}], [torch.zeros(1, 512, 4096), {}]])
    long = torch.ones(1, 600, 4096)
    with caplog.at_level(logging.WARNING):
        out = node.convert([[long, {}]])[0]
    assert out.positive_tokens == 512 and "last 88 are dropped" in caplog.text


def test_prefixed_checkpoint_keys_are_unwrapped(models_dir, tmp_path, reference, spiece):
    prefix = "text_encoders.umt5xxl.transformer."
    state = {prefix + k: v for k, v in comfy_state(reference, spiece).items() if k != "spiece_model"}
    state["text_encoders.umt5xxl.spiece_model"] = comfy_state(reference, spiece)["spiece_model"]
    state["model.diffusion_model.head.weight"] = torch.zeros(2)  # the rest of a full checkpoint
    save_file(state, models_dir / "text_encoders" / "wan_full.safetensors")
    cond = encode(load("wan_full.safetensors"))
    ids = reference_ids(tmp_path, spiece, PROMPT)
    assert relative_error(cond.positive[0, :len(ids)], reference_hidden(reference, ids)) <= REL_TOL


def test_truncation_warning_repeats_on_cache_hits(models_dir, reference, spiece, caplog):
    save_file(comfy_state(reference, spiece), models_dir / "text_encoders" / "umt5_tiny.safetensors")
    encoder = load("umt5_tiny.safetensors")
    long_prompt = " ".join(CORPUS.splitlines() * 6)
    with caplog.at_level(logging.WARNING):
        first = encode(encoder, long_prompt)
        second = encode(encoder, long_prompt)
    assert first.positive_tokens == 512 and torch.equal(first.positive, second.positive)
    assert caplog.text.count("tokens are dropped") == 2


def test_a_tokenizer_too_big_for_the_embeddings_is_refused(models_dir, reference, spiece):
    state = comfy_state(reference, spiece)
    state["shared.weight"] = state["shared.weight"][:50].clone()
    del state["encoder.embed_tokens.weight"]
    save_file(state, models_dir / "text_encoders" / "umt5_small_vocab.safetensors")
    with pytest.raises(InputError, match="pieces but .* only 50 token embeddings"):
        load("umt5_small_vocab.safetensors")


def test_full_encoder_decoder_checkpoint_uses_only_the_encoder(models_dir, tmp_path, reference, spiece):
    """google/umt5-xxl ships the whole seq2seq model; the decoder and lm_head are skipped."""
    full = transformers.UMT5ForConditionalGeneration(reference.config).eval()
    full.shared.load_state_dict(reference.shared.state_dict())
    full.encoder.load_state_dict(reference.encoder.state_dict())
    folder = models_dir / "text_encoders" / "umt5-full"
    full.save_pretrained(folder)
    (folder / "spiece.model").write_bytes(spiece)
    cond = encode(load("umt5-full/model.safetensors"))
    ids = reference_ids(tmp_path, spiece, PROMPT)
    assert relative_error(cond.positive[0, :len(ids)], reference_hidden(reference, ids)) <= REL_TOL
