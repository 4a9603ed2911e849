"""Token counting for cost estimates, exact where possible and never over the network.

The plan step prices a whole run before anything is sent, so counting must be cheap, must
work offline and must say whether it is exact.

Exact counts come from tiktoken, which is optional (not a dependency), and only when its
encoding file is *already on disk*. tiktoken's own ``get_encoding`` downloads the file on first
use with ``requests.get`` and no timeout: offline it fails (or hangs, behind a firewall that
drops packets), so we never call it. We look for the file where tiktoken caches it
(``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else ``<tempdir>/data-gym-cache``, named
by the SHA-1 of its URL), check its SHA-256, and build the ``tiktoken.Encoding`` ourselves from
those bytes. One attempt per encoding per process; failure is silent and cached.

Everything else gets a heuristic: a linear model over character classes and word runs
(ASCII words, accented-Latin words such as Vietnamese, CJK characters, other alphabets,
emoji, digit groups, punctuation, whitespace), fitted by ``benchmarks/calibrate_tokens.py``
against the real o200k_base / cl100k_base encodings. It is an *estimate*: on that script's
corpus, o200k_base totals per script land within 3 % for English, Vietnamese, CJK and code,
within 15 % for European languages (under) and other alphabets; one short text can be off by
30 % or more (cl100k_base fits worse outside Latin and CJK). For Claude, Gemini and DeepSeek,
whose tokenizers are not public or not bundled, it is the o200k_base estimate: a proxy only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from .heuristic import COEFFICIENTS, heuristic_counter

__all__ = [
    "REPLY_PRIMING",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "TokenCounter",
    "count_messages",
    "count_text",
    "counter_for",
]

TOKENS_PER_MESSAGE = 3
"""OpenAI's chat format wraps each message in about 3 tokens (``<|start|>role ... <|end|>``)."""
TOKENS_PER_NAME = 1
"""A ``name`` field costs one more token (OpenAI cookbook, "How to count tokens")."""
REPLY_PRIMING = 3
"""Every reply is primed with ``<|start|>assistant<|message|>``: 3 tokens."""


class TokenCounter:
    """Counts tokens for one model. ``exact`` is False when ``count`` is an estimate."""

    __slots__ = ("name", "exact", "_count")

    def __init__(self, name: str, exact: bool, count: Callable[[str], int]) -> None:
        self.name = name
        self.exact = exact
        self._count = count

    def count(self, text: str) -> int:
        """Tokens in ``text`` (special-token strings are counted as plain text)."""
        return self._count(text) if text else 0

    def count_messages(self, messages: Sequence[Mapping[str, Any]]) -> int:
        """Prompt tokens of a chat request, with OpenAI's documented per-message overhead.

        Counts each message's role, name (+1) and text content, plus 3 per message and 3 for
        the reply priming. Content may be a string or a list of parts; only ``text`` parts
        are counted (images and audio are priced by other rules, so they count 0 here).
        """
        total = REPLY_PRIMING
        for message in messages:
            total += TOKENS_PER_MESSAGE
            role = message.get("role")
            if isinstance(role, str):
                total += self.count(role)
            name = message.get("name")
            if isinstance(name, str):
                total += self.count(name) + TOKENS_PER_NAME
            content = message.get("content")
            if isinstance(content, str):
                total += self.count(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                        total += self.count(part["text"])
        return total

    def __repr__(self) -> str:
        return f"TokenCounter({self.name!r}, exact={self.exact})"


def count_text(text: str, model: str | None = None) -> int:
    """Tokens in ``text`` for ``model`` (see :func:`counter_for`)."""
    return counter_for(model).count(text)


def count_messages(messages: Sequence[Mapping[str, Any]], model: str | None = None) -> int:
    """Prompt tokens of a chat request for ``model`` (see :meth:`TokenCounter.count_messages`)."""
    return counter_for(model).count_messages(messages)


@lru_cache(maxsize=256)
def counter_for(model: str | None) -> TokenCounter:
    """The best counter we can have offline for ``model`` ("openai/gpt-4.1-mini" or bare).

    OpenAI models (and ``None``, meaning "current OpenAI models") count exactly when tiktoken
    is installed and the model's encoding file is already cached; anything else gets the
    heuristic, whose ``name`` says it is an estimate. Cached: one decision per model.
    """
    provider, name = _split(model)
    encoding_name = "o200k_base"
    if provider in (None, "openai"):
        encoding_name, known = _encoding_name(name)
        # A bare name tiktoken does not know is likely not OpenAI's: no tokenizer to try.
        if known or provider == "openai":
            encoding = _load_encoding(encoding_name)
            if encoding is not None:
                label = f"tiktoken {encoding_name}" + ("" if known else " (assumed)")
                return TokenCounter(label, known, _tiktoken_counter(encoding))
    return TokenCounter(
        f"heuristic estimate (calibrated on {encoding_name})",
        False,
        heuristic_counter(COEFFICIENTS[encoding_name]),
    )


def _split(model: str | None) -> tuple[str | None, str | None]:
    """("openai", "gpt-4.1-mini") from "openai/gpt-4.1-mini"; a bare name has no provider."""
    if model is None:
        return None, None
    provider, sep, name = model.partition("/")
    if sep and provider.lower() in _PROVIDERS:
        return provider.lower(), name
    return None, model


_PROVIDERS = {"openai", "anthropic", "deepseek", "gemini", "google"}


def _encoding_name(model: str | None) -> tuple[str, bool]:
    """The encoding ``model`` uses (one we have coefficients for), and whether tiktoken's own
    model table says so; without tiktoken it is our guess from the name."""
    if model is None:
        return "o200k_base", True
    try:
        import tiktoken
    except ImportError:
        tiktoken = None  # type: ignore[assignment]
    if tiktoken is not None:
        try:
            name = tiktoken.encoding_name_for_model(model)
        except (KeyError, AttributeError, ValueError):
            pass
        else:
            # o200k_harmony is o200k_base plus special tokens: same ordinary counts.
            name = "o200k_base" if name == "o200k_harmony" else name
            if name in _ENCODING_FILES:
                return name, True
    # Legacy GPT-4 / GPT-3.5 and embedding models use cl100k_base; all since GPT-4o o200k_base.
    if re.match(r"(gpt-4(?![o.])|gpt-3\.5|text-embedding-)", model.lower()):
        return "cl100k_base", False
    return "o200k_base", False


# --- exact counting: tiktoken, from files already on disk only ------------------------------

# URL and SHA-256 of each encoding file, as in tiktoken_ext/openai_public.py. The URL only
# names the cache file (sha1 of the URL); nothing here ever fetches it.
_ENCODING_FILES: dict[str, tuple[str, str]] = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}

# Split patterns and special tokens, copied from tiktoken_ext/openai_public.py. These
# encodings are frozen (token ids must never change), so copying them is safe, and it lets
# us build the Encoding without tiktoken's loader, which would download on a cache miss.
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_ENCODING_SPECS: dict[str, tuple[str, dict[str, int]]] = {
    "o200k_base": (_O200K_PATTERN, {"<|endoftext|>": 199999, "<|endofprompt|>": 200018}),
    "cl100k_base": (
        _CL100K_PATTERN,
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        },
    ),
}

_load_lock = threading.Lock()
_loaded: dict[str, Any] = {}  # encoding name -> tiktoken.Encoding, or None after a failure


def _tiktoken_cache_path(url: str) -> str | None:
    """Where tiktoken caches ``url`` (mirrors tiktoken.load.read_file_cached); None if disabled."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:  # tiktoken treats "" as "never cache, always download"
        return None
    return os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())


def _load_encoding(name: str) -> Any:
    """The tiktoken Encoding ``name`` if it can be had from disk, else None. Never networks."""
    with _load_lock:
        if name not in _loaded:
            _loaded[name] = _try_load(name)
        return _loaded[name]


def _try_load(name: str) -> Any:
    if name not in _ENCODING_FILES:
        return None
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        # Already loaded in this process by someone else: reuse it, no I/O at all.
        loaded = getattr(getattr(tiktoken, "registry", None), "ENCODINGS", {}).get(name)
        if loaded is not None:
            return loaded
        url, sha256 = _ENCODING_FILES[name]
        path = _tiktoken_cache_path(url)
        if path is None or not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            return None
        ranks = {}
        for line in data.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
        pattern, special = _ENCODING_SPECS[name]
        return tiktoken.Encoding(
            name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=dict(special)
        )
    except Exception:  # any surprise from an optional package means "estimate instead"
        return None


def _tiktoken_counter(encoding: Any) -> Callable[[str], int]:
    def count(text: str) -> int:
        return len(encoding.encode_ordinary(text))

    return count
