"""Text encoding: cost of encoding a prompt vs serving it from the prompt cache.

Random umT5 weights (tiny and medium configs) and a SentencePiece model trained on the fly; the
timings cover the whole ``VideoDiTTextEncode`` path (cleaning, hashing, cache, 512-padding).
Run: ``python bench/text_cache.py`` (CPU). Record the table in bench/README.md.
"""
from __future__ import annotations

import io
import platform
import statistics
import time

import torch

from comfyui_videodit.model_loaders.tokenizer import UMT5Tokenizer
from comfyui_videodit.model_loaders.umt5_loader import TextEncoder
from comfyui_videodit.networks.umt5 import UMT5Config, UMT5Encoder
from comfyui_videodit.runtime.memory import ManagedModel
from comfyui_videodit.core.prompt_cache import PromptCache
from comfyui_videodit.families.wan import WanFamily
from comfyui_videodit.samplers.text_conditioning import encode_conditioning

TEXT_LEN = WanFamily.text_spec.length

CONFIGS = {
    "tiny (d 64, 2 layers)": UMT5Config(vocab_size=1024, d_model=64, d_kv=16, d_ff=128,
                                        num_layers=2, num_heads=4),
    "medium (d 1024, 8 layers)": UMT5Config(vocab_size=1024, d_model=1024, d_kv=64, d_ff=2816,
                                            num_layers=8, num_heads=16),
    # One block of umT5-XXL's 24 (0.8 GB fp32): multiply its miss time by ~24 for the full model.
    "XXL-wide, 1 of 24 blocks": UMT5Config(vocab_size=1024, num_layers=1),
}
SENTENCES = ["A cat walks on the grass in a sunny meadow, golden hour lighting, the camera pans.",
             "Кошка идёт по траве, камера медленно движется вперёд.",
             "一只猫在草地上行走，电影质感，黄金时刻的光线。"]


def tokenizer() -> UMT5Tokenizer:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES * 20), model_writer=model,
                                   vocab_size=300, hard_vocab_limit=False, character_coverage=1.0,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return UMT5Tokenizer(model.getvalue())


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def miss_and_hit_ms(encoder: TextEncoder, positive: str, negative: str) -> tuple:
    cache = PromptCache()

    def miss():
        cache.clear()
        return encode_conditioning(encoder, positive, negative, cache=cache, text_len=TEXT_LEN)

    cond = miss()
    miss_ms = median_ms(miss, 5)
    hit_ms = median_ms(lambda: encode_conditioning(encoder, positive, negative, cache=cache, text_len=TEXT_LEN), 50)
    return cond, miss_ms, hit_ms


def main() -> None:
    torch.manual_seed(0)
    tok = tokenizer()
    positive = " ".join(SENTENCES)   # a typical long Wan prompt in tokens
    negative = SENTENCES[2]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    print("| config | tokens (pos/neg) | encode, cache miss (ms) | cache hit (ms) | miss/hit |")
    print("|---|---|---|---|---|")
    cpu = torch.device("cpu")
    for label, config in CONFIGS.items():
        module = UMT5Encoder(config).eval()
        encoder = TextEncoder(ManagedModel(module, label, load_device=cpu, offload_device=cpu),
                              tok, identity=label, dtype=torch.float32, name=label)
        cond, miss_ms, hit_ms = miss_and_hit_ms(encoder, positive, negative)
        print(f"| {label} | {cond.positive_tokens}/{cond.negative_tokens} | {miss_ms:.1f} | "
              f"{hit_ms:.2f} | {miss_ms / hit_ms:.0f}x |")


if __name__ == "__main__":
    main()
