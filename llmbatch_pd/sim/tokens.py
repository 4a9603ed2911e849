"""A tokenizer-shaped token counter, so usage figures look like a real provider's.

It is not any real BPE: it only has to be deterministic, cheap and of the right size per
script (English words are cheap, Vietnamese syllables dearer, CJK one per character).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

TOKENS_PER_MESSAGE = 3
"""OpenAI's chat format costs about 3 tokens per message ..."""
REPLY_PRIMING = 3
"""... and 3 more to prime the assistant's reply."""

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_EMOJI = "\U0001f000-\U0001faff\u2600-\u27bf"
_SEGMENT = re.compile(
    rf"(?P<word>[^\W\d_{_CJK}{_EMOJI}]+)"  # letters of any alphabet except CJK
    r"|(?P<digits>\d+)"
    rf"|(?P<cjk>[{_CJK}])"
    rf"|(?P<emoji>[{_EMOJI}])"
    r"|(?P<space>[\s\u200d\ufe0f]+)"  # spaces, zero-width joiners and emoji selectors are free
    r"|(?P<other>.)",
    re.S,
)
_ASCII_WORD = re.compile(r"[A-Za-z]+")
_DIGITS = re.compile(r"[0-9]+")
_ASCII_OTHER = re.compile(r"[^\sA-Za-z0-9]")


def segments(text: str) -> Iterator[tuple[str, int, int]]:
    """Yield (piece, tokens, chars per token) for each piece of the text."""
    for m in _SEGMENT.finditer(text):
        kind, piece = m.lastgroup, m.group()
        if kind == "word":
            per = 4 if piece.isascii() else 2
            yield piece, max(1, (len(piece) + per // 2) // per), per
        elif kind == "digits":
            yield piece, -(-len(piece) // 3), 3
        elif kind == "emoji":
            yield piece, 2, 1
        elif kind == "space":
            yield piece, 0, 1
        else:  # a CJK character or a punctuation mark
            yield piece, 1, 1


def count_tokens(text: str) -> int:
    """Tokens in a piece of text."""
    if text.isascii():  # the common case, counted in C: about 3x faster than the walk
        return (
            sum(map(_cost_of_word, map(len, _ASCII_WORD.findall(text))))
            + sum(-(-len(d) // 3) for d in _DIGITS.findall(text))
            + len(_ASCII_OTHER.findall(text))
        )
    return sum(n for _, n, _ in segments(text))


def _cost_of_word(length: int) -> int:
    return (length + 2) // 4 or 1


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """The text cut to at most max_tokens tokens (mid-word if need be), and whether it was cut."""
    if count_tokens(text) <= max_tokens:
        return text, False
    out: list[str] = []
    left = max_tokens
    for piece, n, per in segments(text):
        if n > left:
            if left > 0:
                out.append(piece[: left * per])
            return "".join(out).rstrip(), True
        out.append(piece)
        left -= n
    return text, False


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens of a chat request, counted the way OpenAI's chat format does."""
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE + count_tokens(str(message.get("role", "")))
        total += count_tokens(content_text(message.get("content")))
        if "name" in message:
            total += 1 + count_tokens(str(message["name"]))
    return total

_segments = segments  # the name tests/sim/test_sim.py imports
