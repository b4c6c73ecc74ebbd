"""umT5 tokenizer: same ids as transformers' T5 tokenizer and raw SentencePiece, Wan's limits.

Real umT5 tokenizer files cannot be downloaded here, so a small SentencePiece model is trained
on a multilingual text (Latin, Cyrillic, CJK, Arabic, emoji) with umT5's special ids
(pad 0, EOS 1, unk 2, no BOS).
"""
from __future__ import annotations

import io
import logging

import pytest

pytest.importorskip("sentencepiece")

CORPUS = """A cat walks on the grass in a sunny meadow, realistic style, golden hour lighting.
The quick brown fox jumps over the lazy dog near the river bank while the camera pans left.
A woman in a red coat walks through a snowy street at night, neon signs reflecting on wet asphalt.
Кошка идёт по траве в солнечный день, камера медленно движется вперёд.
Девушка в красном пальто идёт по заснеженной улице ночью.
一只猫在草地上行走，电影质感，黄金时刻的光线，镜头缓慢推进。
色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，最差质量，低质量。
日本語のテキストも少し入れておきます。東京の夜景、雨の中を歩く人。
قطة تمشي على العشب في يوم مشمس والكاميرا تتحرك ببطء نحو الأمام.
Emoji test 🐱 🌅 🎬 with a sunset 🌇 and a film reel 🎞 at the end.
Ein Hund läuft über die Wiese, Straße, Größe, Übermaß, Ähre.
"""

PROMPTS = [
    "A cat walks on the grass, golden hour lighting.",
    "Кошка идёт по траве",
    "一只猫在草地上行走，电影质感",
    "قطة تمشي على العشب",
    "Emoji 🐱🌅 sunset 🎬",
    "Größe Übermaß Straße",
    "",
]


def train_spiece(byte_fallback: bool) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.splitlines() * 10), model_writer=model, vocab_size=800,
        hard_vocab_limit=False, model_type="unigram", character_coverage=1.0,
        byte_fallback=byte_fallback, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return model.getvalue()


@pytest.fixture(scope="module")
def spiece_plain():
    return train_spiece(byte_fallback=False)


@pytest.fixture(scope="module")
def spiece_byte_fallback():
    return train_spiece(byte_fallback=True)


def hf_tokenizer(tmp_path, proto):
    transformers = pytest.importorskip("transformers")
    (tmp_path / "spiece.model").write_bytes(proto)
    return transformers.T5Tokenizer.from_pretrained(str(tmp_path), extra_ids=0)


def test_ids_match_transformers_t5_tokenizer(tmp_path, spiece_plain):
    from comfyui_videodit.model_loaders.tokenizer import UMT5Tokenizer, clean_prompt

    ours = UMT5Tokenizer(spiece_plain)
    reference = hf_tokenizer(tmp_path, spiece_plain)
    for prompt in PROMPTS:
        expected = reference(clean_prompt(prompt), truncation=True, max_length=512).input_ids
        assert list(ours.encode(prompt).ids) == expected, prompt
    assert ours.encode("").ids == (1,)  # the empty prompt is just EOS, as in Wan


def test_long_prompt_truncates_like_transformers_and_warns(tmp_path, spiece_plain, caplog):
    from comfyui_videodit.model_loaders.tokenizer import UMT5Tokenizer, clean_prompt

    ours = UMT5Tokenizer(spiece_plain)
    reference = hf_tokenizer(tmp_path, spiece_plain)
    prompt = " ".join(CORPUS.splitlines() * 8)
    full = len(ours._sp.encode(clean_prompt(prompt)))
    assert full > 600
    with caplog.at_level(logging.WARNING):
        result = ours.encode(prompt)
    assert len(result.ids) == 512 and result.ids[-1] == 1
    assert result.dropped == full - 511
    expected = reference(clean_prompt(prompt), truncation=True, max_length=512).input_ids
    assert list(result.ids) == expected
    message = caplog.text
    assert f"last {full - 511} tokens are dropped" in message and "reads 512" in message


def test_ids_match_raw_sentencepiece_with_byte_fallback(spiece_byte_fallback):
    """umT5's model uses byte fallback (emoji become byte pieces instead of <unk>)."""
    import sentencepiece as spm

    from comfyui_videodit.model_loaders.tokenizer import UMT5Tokenizer, clean_prompt

    raw = spm.SentencePieceProcessor(model_proto=spiece_byte_fallback)
    ours = UMT5Tokenizer(spiece_byte_fallback)
    for prompt in PROMPTS + ["unseen characters: ☃ ꙮ 𝄞"]:
        assert list(ours.encode(prompt).ids) == raw.encode(clean_prompt(prompt)) + [1], prompt
    assert 2 not in ours.encode("unseen characters: ☃ ꙮ 𝄞").ids  # no <unk>: bytes instead


def test_cleaning_matches_wan():
    from comfyui_videodit.model_loaders.tokenizer import clean_prompt

    assert clean_prompt("  a\tcat \n\n walks  ") == "a cat walks"
    assert clean_prompt("rock &amp;amp; roll &lt;3") == "rock & roll <3"  # unescaped twice
    assert clean_prompt("") == ""


def test_invalid_tokenizer_bytes_name_the_fix():
    from comfyui_videodit.errors import InputError
    from comfyui_videodit.model_loaders.tokenizer import UMT5Tokenizer

    with pytest.raises(InputError, match="not a valid SentencePiece model.*spiece.model"):
        UMT5Tokenizer(b"definitely not a protobuf")
