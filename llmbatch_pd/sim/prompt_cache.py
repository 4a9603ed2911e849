"""Prompt caching as the providers bill it, with the simulator's own token count.

OpenAI dialect (also what Gemini, DeepSeek and gateways speak): automatic. The prompt is the
stream of tokens ``tokens.count_prompt_tokens`` counts, message by message in order (each
message's 3 + role tokens, then its text; the 3 reply-priming tokens last), cut into 128-token
blocks. A request reads from the cache the longest prefix of >= 1,024 tokens (8 blocks, then
128-token steps) that an earlier request with the same model and ``prompt_cache_key`` (or none)
carried; a prefix is cached once the request carrying it is answered (so a first wave of
concurrent requests all miss) and stays ``prompt_cache_ttl_s`` seconds after its last use.
Usage: ``prompt_tokens`` (all) and ``prompt_tokens_details.cached_tokens``; models named
``deepseek*`` also get ``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens``.

Anthropic: only what ``cache_control`` marks (a text block of ``system`` or of a message, or the
top-level ``cache_control``, which marks the end of the conversation). Each mark is a breakpoint;
the prefix up to it counts system (3 + role tokens, then its blocks' text) then the messages, as
the chat-format count does. A breakpoint whose prefix is under the model's minimum
(``anthropic_cache_min_tokens``: the longest key the model name starts with, else 1,024) is
silently ignored. The longest cached breakpoint prefix is read; the tokens from there up to the
last breakpoint are written, each stretch with the TTL of the breakpoint that ends it ("5m",
or "1h" with ``"ttl": "1h"``). Usage: ``input_tokens`` = the rest, ``cache_read_input_tokens``,
``cache_creation_input_tokens`` and ``cache_creation: {ephemeral_5m_input_tokens,
ephemeral_1h_input_tokens}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from .config import SimConfig
from .tokens import TOKENS_PER_MESSAGE, content_text, count_tokens, segments

BLOCK = 128
OPENAI_MIN = 1024
ANTHROPIC_MIN = 1024
TTLS = {"5m": 300.0, "1h": 3600.0}
MAX_BREAKPOINTS = 4


@dataclass(frozen=True)
class CacheUse:
    """What one request reads from and writes to the cache, and what to store once answered."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0
    pending: tuple[tuple[tuple[str, ...], float], ...] = field(default=(), repr=False)

    @property
    def write(self) -> int:
        return self.write_5m + self.write_1h


NO_CACHE = CacheUse()


class PromptCache:
    """The cached prefixes of both APIs (keys -> monotonic expiry) and running totals."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, ...], float] = {}
        self.totals = {"prompt_tokens": 0, "cached_tokens": 0, "cache_write_tokens": 0}

    def clear(self) -> None:
        self._entries.clear()
        self.totals = dict.fromkeys(self.totals, 0)

    def _alive(self, key: tuple[str, ...], now: float) -> bool:
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry < now:
            del self._entries[key]
            return False
        return True

    def openai(self, model: str, cache_key: Any, messages: list[dict[str, Any]],
               prompt_tokens: int, now: float, cfg: SimConfig) -> CacheUse:
        """Automatic prefix caching: the cached tokens of this request, and what it carries."""
        if not cfg.prompt_caching or prompt_tokens < OPENAI_MIN:
            return NO_CACHE
        keys = [("openai", model, str(cache_key), digest)
                for digest in _block_digests(model, messages)[OPENAI_MIN // BLOCK - 1:]]
        read = 0
        for i, key in enumerate(keys):
            if not self._alive(key, now):
                break
            read = OPENAI_MIN + i * BLOCK
        return CacheUse(read=read, pending=tuple((k, cfg.prompt_cache_ttl_s) for k in keys))

    def anthropic(self, model: str, body: dict[str, Any], now: float, cfg: SimConfig) -> CacheUse:
        """``cache_control`` caching: read, 5m and 1h writes, and what the request carries."""
        if not cfg.prompt_caching or not _marks(body):
            return NO_CACHE
        least = min_tokens(model, cfg.anthropic_cache_min_tokens)
        marks = [m for m in breakpoints(model, body) if m[0] >= least]
        if not marks:
            return NO_CACHE
        read = next((tokens for tokens, key, _ in reversed(marks) if self._alive(key, now)), 0)
        written = {"5m": 0, "1h": 0}
        done = read
        for tokens, _, ttl in marks:
            if tokens > done:
                written[ttl] += tokens - done
                done = tokens
        return CacheUse(read, written["5m"], written["1h"],
                        tuple((key, TTLS[ttl]) for _, key, ttl in marks))

    def commit(self, use: CacheUse, prompt_tokens: int, now: float) -> None:
        """The request was answered: its prefixes are cached (or their TTL refreshed)."""
        for key, ttl in use.pending:
            self._entries[key] = now + ttl
        self.totals["prompt_tokens"] += prompt_tokens
        self.totals["cached_tokens"] += use.read
        self.totals["cache_write_tokens"] += use.write


def _block_digests(model: str, messages: list[dict[str, Any]]) -> list[str]:
    """The sha256 of the prompt up to the end of each whole 128-token block of its token
    stream: its text so far (role headers marked), and at a block end inside a piece of
    several tokens, that whole piece and how many of its tokens the block holds."""
    fed = [model.encode()]
    out: list[str] = []
    done = 0
    for message in messages:
        pieces, counts = message_pieces(message)
        cum = list(accumulate(counts, initial=done))  # tokens before each piece, then the end
        ends = list(accumulate(map(len, pieces)))
        text = "".join(pieces)
        while (len(out) + 1) * BLOCK <= cum[-1]:
            end = (len(out) + 1) * BLOCK
            j = bisect_left(cum, end) - 1  # the piece holding the block's last token
            inside = end - cum[j]
            prefix = text[:ends[j]] + ("" if inside == counts[j] else f"\x1d{inside}")
            out.append(hashlib.sha256(b"".join(fed) + prefix.encode()).hexdigest())
        fed.append(text.encode())
        done = cum[-1]
    return out


_ASCII_PIECE = re.compile(r"[A-Za-z]+|[0-9]+|\s+|[^\sA-Za-z0-9]")


def message_pieces(message: dict[str, Any]) -> tuple[list[str], list[int]]:
    """A message's pieces of text and their tokens, as ``count_prompt_tokens`` counts them:
    a role header (3 + the role's tokens), the text (spaces are pieces of no tokens), the name.
    Joined, the pieces are the text with the header marked."""
    role = str(message.get("role", ""))
    text = content_text(message.get("content"))
    if text.isascii():  # the common case: one regex in C and a cheap cost per piece
        pieces = _ASCII_PIECE.findall(text)
        counts = [_ascii_cost(p) for p in pieces]
    else:
        parts = list(segments(text))
        pieces, counts = [p for p, _, _ in parts], [n for _, n, _ in parts]
    pieces.insert(0, f"\x1e{role}\x1e")
    counts.insert(0, TOKENS_PER_MESSAGE + count_tokens(role))
    if "name" in message:
        name = str(message["name"])
        pieces.append(f"\x1ename\x1e{name}")
        counts.append(1 + count_tokens(name))
    return pieces, counts


def _ascii_cost(piece: str) -> int:
    first = piece[0]
    if first.isalpha():
        return (len(piece) + 2) // 4 or 1
    if first.isdigit():
        return -(-len(piece) // 3)
    return 0 if first.isspace() else 1


def min_tokens(model: str, table: dict[str, int]) -> int:
    """The model's caching minimum: the longest key its name starts with, else 1,024."""
    keys = [k for k in table if model.startswith(k)]
    return table[max(keys, key=len)] if keys else ANTHROPIC_MIN


def breakpoints(model: str, body: dict[str, Any]) -> list[tuple[int, tuple[str, ...], str]]:
    """(prefix tokens, cache key, ttl) for each ``cache_control`` mark, in prompt order."""
    running = hashlib.sha256(f"anthropic\n{model}".encode())
    tokens, marks = 0, []

    def mark(control: Any) -> None:
        ttl = control.get("ttl", "5m") if isinstance(control, dict) else "5m"
        marks.append((tokens, ("anthropic", model, running.copy().hexdigest()), ttl))

    def take(role: str, content: Any) -> None:
        nonlocal tokens
        tokens += TOKENS_PER_MESSAGE + count_tokens(role)
        running.update(f"\x1e{role}".encode())
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks:
            if block.get("type") == "text":
                tokens += count_tokens(block["text"])
            plain = {k: v for k, v in block.items() if k != "cache_control"}
            running.update(json.dumps(plain, sort_keys=True).encode())
            if block.get("cache_control") and block.get("type") == "text":
                mark(block["cache_control"])

    if body.get("system"):
        take("system", body["system"])
    for message in body["messages"]:
        take(message["role"], message["content"])
    if body.get("cache_control"):
        mark(body["cache_control"])
    return marks


def _marks(body: dict[str, Any]) -> list[Any]:
    """Every ``cache_control`` of a Messages body: system and message blocks, then the top."""
    blocks = list(body["system"]) if isinstance(body.get("system"), list) else []
    for message in body.get("messages", []):
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            blocks.extend(message["content"])
    found = [b["cache_control"] for b in blocks if isinstance(b, dict) and b.get("cache_control")]
    if body.get("cache_control"):
        found.append(body["cache_control"])
    return found


def check_cache_control(body: dict[str, Any]) -> str | None:
    """What the Messages API refuses about cache marks: an unknown ttl, more than 4 marks."""
    found = _marks(body)
    for control in found:
        if not isinstance(control, dict) or control.get("type") != "ephemeral":
            return "cache_control.type: Input should be 'ephemeral'"
        if control.get("ttl", "5m") not in TTLS:
            return "cache_control.ttl: Input should be '5m' or '1h'"
    if len(found) > MAX_BREAKPOINTS:
        return (f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                f"Found {len(found)}.")
    return None
