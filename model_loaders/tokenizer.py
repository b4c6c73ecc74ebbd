"""The umT5 SentencePiece tokenizer, prompt cleaning and Wan's 512-token budget.

Wan tokenizes with ``google/umt5-xxl``: the prompt is cleaned (HTML entities unescaped twice,
whitespace runs collapsed to one space), no BOS, EOS (id 1) appended, and at most 512 tokens
including the EOS. Upstream also runs ``ftfy.fix_text`` first; ftfy is not a ComfyUI
dependency, so it is used when installed and skipped otherwise (it only repairs mojibake such
as ``â€™``; well-formed text is unchanged by it).

The SentencePiece model comes as bytes: from the ``spiece_model`` uint8 tensor inside ComfyUI's
single-file text encoders, or from a ``spiece.model`` file (see ``umt5_loader``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from ..core.text import clean_prompt
from ..errors import InputError

log = logging.getLogger(__name__)

WAN_TEXT_LEN = 512


@dataclass(frozen=True)
class TokenizedPrompt:
    ids: tuple[int, ...]      # content tokens + EOS, at most max_length
    dropped: int              # content tokens cut off by truncation


class UMT5Tokenizer:
    def __init__(self, model_proto: bytes, *, max_length: int = WAN_TEXT_LEN, source: str = ""):
        import sentencepiece

        self.source = source
        self.max_length = max_length
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=bytes(model_proto))
        except Exception as err:  # sentencepiece raises RuntimeError/OSError on a bad proto
            raise InputError(f"the tokenizer {source or ''} is not a valid SentencePiece model "
                             f"({str(err)[:120]})".replace("  ", " "), input="text_encoder_name",
                             fix="replace spiece.model with the one from google/umt5-xxl") from None
        self.eos_id = self._sp.eos_id()
        if self.eos_id < 0:
            raise InputError(f"the tokenizer {source} has no end-of-sequence token",
                             input="text_encoder_name",
                             fix="use the umT5 spiece.model (EOS id 1, pad id 0)")
        self.model_proto = bytes(model_proto)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str, *, clean: bool = True) -> TokenizedPrompt:
        """Token ids of one prompt: cleaned, EOS appended, truncated to ``max_length``."""
        if clean:
            text = clean_prompt(text)
        ids = self._sp.encode(text)
        room = self.max_length - 1
        dropped = max(0, len(ids) - room)
        if dropped:
            kept_words = self._sp.decode(ids[:room]).split()
            tail = " ".join(kept_words[-4:]) if kept_words else ""
            log.warning("VideoDiT: prompt is %d tokens long; the text encoder reads %d, so the "
                        "last %d tokens are dropped (the prompt now ends at '...%s'). Shorten the "
                        "prompt to keep all of it.", len(ids) + 1, self.max_length, dropped, tail)
            ids = ids[:room]
        return TokenizedPrompt(tuple(ids) + (self.eos_id,), dropped)
