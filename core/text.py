"""Prompt text cleaning shared by the tokenizer and the prompt cache key.

Wan's "whitespace" cleaning (from its umT5 tokenizer setup): HTML entities unescaped twice,
whitespace runs collapsed to one space, ends stripped; ``ftfy.fix_text`` first when ftfy is
installed (it only repairs mojibake such as ``â€™``; it is not a ComfyUI dependency).
"""
from __future__ import annotations

import html
import re

_WHITESPACE = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        ftfy = None
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()
