"""Deterministic answers: the same model and messages always get the same reply.

Everything random here is seeded from a sha256 of the request, never from Python's
``hash()`` (salted per process), so answers agree across runs, threads and processes.
Prompts that offer options ("as positive, negative or neutral", "one of: a, b, c",
"Answer yes or no") get exactly one of them, so demos produce tidy columns.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from .tokens import content_text, count_tokens, truncate_tokens

_WORDS = (
    "the a data row model batch token cost fast slow good plan test time "
    "fine small large clear text each all some more less best next last "
    "load send read note mark keep move make take give show ask call case"
).split()

_QUOTES = "\"'“”‘’`"
_OPT = rf"[{_QUOTES}]?[\w-]+[{_QUOTES}]?"
_INLINE = re.compile(  # "as positive, negative or neutral", "Answer with 'yes' or 'no'"
    r"\b(?:as|answer|reply|respond|say|return|output|either)\s+"
    r"(?:(?:with|only|just|either|exactly)\s+)*"
    rf"(?P<list>{_OPT}(?:\s*,\s*{_OPT})*,?\s+or\s+{_OPT})(?!\w)",
    re.I,
)
_LISTED = re.compile(  # "one of: a, b, c", "choose from the following labels: x, y"
    r"\b(?:one of|choose from|choose between|pick from|select from|options are|labels are)"
    r"(?:\s+(?:the|these))?(?:\s+following)?"
    r"(?:\s+(?:options|labels|categories|choices|values|words|answers))?"
    r"\s*[:\-]?\s*(?P<list>[^\n.:;?!]+)",
    re.I,
)
_BINARY = re.compile(r"\b(?P<list>yes\s*(?:or|/)\s*no|true\s*(?:or|/)\s*false)\b", re.I)
_SPLIT = re.compile(r"\s*(?:,|\bor\b|\band\b|/|\|)\s*", re.I)

_POSITIVE = (
    "great|good|love|loved|loves|excellent|amazing|awesome|perfect|happy|wonderful|fantastic|"
    "best|recommend|nice|satisfied|delighted|not bad|tốt|tuyệt|tuyệt vời|hài lòng|thích|đẹp|"
    "xuất sắc|ổn|yêu|không tệ"
)
_NEGATIVE = (
    "bad|broken|terrible|awful|worst|hate|poor|disappointed|disappointing|refund|waste|useless|"
    "horrible|not good|not worth|never again|tệ|thất vọng|hỏng|kém|chán|dở|lỗi|không tốt|"
    "không hài lòng|không thích|không đáng|không ổn|tồi"
)
_POLARITY = {w: 1 for w in _POSITIVE.split("|")} | {w: -1 for w in _NEGATIVE.split("|")}
# Longest phrases first, so "không hài lòng" wins over the "hài lòng" inside it.
_SENTIMENT = re.compile(
    r"(?<!\w)(?:" + "|".join(sorted(map(re.escape, _POLARITY), key=len, reverse=True)) + r")(?!\w)",
    re.I,
)


@dataclass(frozen=True)
class Answer:
    """One reply: its text, why it stopped, and its size in tokens."""

    text: str
    finish_reason: str
    completion_tokens: int


def prompt_sha(messages: list[dict[str, Any]]) -> str:
    """sha256 hex of the messages' canonical JSON; names a prompt in the request log."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def make_answer(
    messages: list[dict[str, Any]],
    model: str,
    *,
    answer_tokens: int = 40,
    max_tokens: int | None = None,
    response_format: dict[str, Any] | None = None,
    sha: str | None = None,
) -> Answer:
    """The deterministic reply to a chat request, cut to max_tokens if given."""
    sha = sha or prompt_sha(messages)
    rng = random.Random(int(hashlib.sha256(f"{model}\n{sha}".encode()).hexdigest()[:16], 16))
    prompt = _last_user_text(messages)
    options = find_options(prompt)
    if options:
        text = choose_option(options, prompt, rng)
    else:
        text = _sentences(rng, max(1, round(answer_tokens * (0.5 + rng.random()))))
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        text = json.dumps({"answer": text}, ensure_ascii=False)
    elif kind == "json_schema":
        schema = (response_format or {}).get("json_schema", {}).get("schema", {})
        text = json.dumps(_fill(schema, schema, rng, options, prompt), ensure_ascii=False)
    finish = "stop"
    if max_tokens is not None:
        text, cut = truncate_tokens(text, max_tokens)
        finish = "length" if cut else "stop"
    return Answer(text, finish, count_tokens(text))


def find_options(prompt: str) -> list[str]:
    """The options a prompt asks to choose among, as written, or [] if it offers none."""
    found = [m for p in (_INLINE, _LISTED, _BINARY) if (m := p.search(prompt))]
    for m in sorted(found, key=lambda m: m.start()):
        raw = m.group("list").strip().strip("[](){}")
        options = [o.strip(_QUOTES + " []{}()") for o in _SPLIT.split(raw)]
        options = [o for o in options if o]
        if 2 <= len(options) <= 20 and all(len(o.split()) <= 3 for o in options):
            return list(dict.fromkeys(options))
    return []


def choose_option(options: list[str], prompt: str, rng: random.Random) -> str:
    """One option: by keyword sentiment when the options are sentiments, else by hash."""
    lower = {o.lower(): o for o in options}
    if "positive" in lower and "negative" in lower:
        text = unicodedata.normalize("NFC", prompt)  # decomposed diacritics match too
        score = sum(_POLARITY.get(m.group().lower(), 0) for m in _SENTIMENT.finditer(text))
        if score > 0:
            return lower["positive"]
        if score < 0:
            return lower["negative"]
        if "neutral" in lower:
            return lower["neutral"]
    return rng.choice(options)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return content_text(messages[-1].get("content")) if messages else ""


def _sentences(rng: random.Random, n_tokens: int) -> str:
    """Exactly n_tokens tokens of plain sentences: one-token words, each sentence ending '.'."""
    words = rng.choices(_WORDS, k=n_tokens)
    out: list[str] = []
    start = 0
    while start < n_tokens:
        # A sentence of `size` words takes size + 1 tokens with its full stop.
        size = min(rng.randint(5, 12), n_tokens - start - 1)
        if size < 1:  # one token left: a last word without a full stop
            out.append(words[start].capitalize())
            break
        out.append(" ".join(words[start : start + size]).capitalize() + ".")
        start += size + 1
    return " ".join(out)


def _fill(
    node: Any, root: dict[str, Any], rng: random.Random, options: list[str], prompt: str
) -> Any:
    """A value that fits a JSON schema, so structured-output requests parse."""
    if not isinstance(node, dict):
        return None
    if "$ref" in node:
        target: Any = root
        for part in str(node["$ref"]).lstrip("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return _fill(target, root, rng, options, prompt)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return choose_option([str(v) for v in node["enum"]], prompt, rng)
    for key in ("anyOf", "oneOf", "allOf"):
        if node.get(key):
            return _fill(node[key][0], root, rng, options, prompt)
    kind = node.get("type", "object" if "properties" in node else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = node.get("properties", {})
        return {k: _fill(v, root, rng, options, prompt) for k, v in props.items()}
    if kind == "array":
        return [_fill(node.get("items", {}), root, rng, options, prompt) for _ in range(2)]
    if kind == "integer":
        return rng.randint(0, 10)
    if kind == "number":
        return round(rng.random() * 10, 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if options:
        return choose_option(options, prompt, rng)
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
