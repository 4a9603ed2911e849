"""Deterministic answers: the same model and messages always get the same reply.

Everything random here is seeded from a sha256 of the request, never from Python's
``hash()`` (salted per process), so answers agree across runs, threads and processes.
Prompts that offer options ("as positive, negative or neutral", "one of: a, b, c",
"Answer yes or no") get exactly one of them, so demos produce tidy columns.

Structured requests get JSON that fits their schema (OpenAI's ``json_schema``/``json_object``
response formats, Anthropic's ``output_config.format`` and forced tools, which the dialects turn
into one internal ``response_format``), so the SDKs' ``parse()`` helpers succeed; the
``fault_invalid_json`` knob asks for a broken one instead, so clients' validation retries run.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
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
    """One reply: its text, why it stopped, and its size in tokens.

    ``tool`` names the tool a forced tool call went to; ``text`` is then the call's input JSON.
    """

    text: str
    finish_reason: str
    completion_tokens: int
    tool: str | None = None


def is_structured(response_format: dict[str, Any] | None) -> bool:
    """Whether a request asks for JSON (the only answers ``fault_invalid_json`` can break)."""
    return (response_format or {}).get("type") in ("json_object", "json_schema", "tool")


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
    invalid: bool = False,
    verbose: bool = False,
) -> Answer:
    """The deterministic reply to a chat request, cut to max_tokens if given.

    ``response_format`` is OpenAI's, or ``{"type": "tool", "name", "schema"}`` for a forced
    tool call; ``invalid`` breaks a structured answer (truncated JSON or a field missing);
    ``verbose`` follows a chosen option with a justification of about answer_tokens tokens.
    """
    sha = sha or prompt_sha(messages)
    rng = random.Random(int(hashlib.sha256(f"{model}\n{sha}".encode()).hexdigest()[:16], 16))
    prompt = _last_user_text(messages)
    options = find_options(prompt)
    if options:
        text = choose_option(options, prompt, rng)
        if verbose:
            text += ". " + _sentences(rng, max(1, round(answer_tokens * (0.5 + rng.random()))))
    else:
        text = _sentences(rng, max(1, round(answer_tokens * (0.5 + rng.random()))))
    fmt = response_format or {}
    if fmt.get("type") not in ("json_object", "json_schema", "tool"):
        return finish_answer(text, max_tokens)
    schema, tool = format_schema(fmt, messages)
    value = _fill(schema, schema, rng, options, prompt) if schema else {"answer": text}
    return structured_answer(value, schema, rng, tool, invalid=invalid, max_tokens=max_tokens)


def format_schema(fmt: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[Any, str | None]:
    """(the JSON schema a structured request asks for, the forced tool's name or None)."""
    kind = fmt.get("type")
    if kind == "json_schema":
        return fmt.get("json_schema", {}).get("schema", {}), None
    if kind == "json_object":  # JSON mode: a model follows a schema the prompt spells out
        return schema_in_prompt(messages), None
    if kind == "tool":
        return fmt.get("schema", {}), str(fmt.get("name"))
    return {}, None


def structured_answer(value: Any, schema: Any, rng: random.Random, tool: str | None, *,
                      invalid: bool = False, max_tokens: int | None = None) -> Answer:
    """A JSON answer of ``value`` (broken on purpose when ``invalid``), cut to max_tokens."""
    text = json.dumps(value, ensure_ascii=False)
    if invalid:
        text = _broken(value, schema, rng, keep_json=tool is not None)
    return finish_answer(text, max_tokens, tool)


def finish_answer(text: str, max_tokens: int | None, tool: str | None = None) -> Answer:
    """The reply cut to max_tokens (finish "length" when cut), with its token count."""
    finish = "stop"
    if max_tokens is not None:
        text, cut = truncate_tokens(text, max_tokens)
        finish = "length" if cut else "stop"
    return Answer(text, finish, count_tokens(text), tool)


def packed_answer(row_fields: dict[str, Any], options: list[str] | tuple[str, ...] = ()) -> str:
    """The answer to one row of a packed request: deterministic from the row's fields (its
    object without "id"), so a test can tell which row an answer belongs to.

    Without options it is 3 to 8 one-token words seeded by the sha256 of the fields' canonical
    JSON; when the packed instructions offer options (``find_options``) it is one of them,
    picked like a single-row answer (by sentiment for sentiment labels, else by the hash).
    """
    canonical = json.dumps(row_fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    rng = random.Random(int(hashlib.sha256(canonical.encode()).hexdigest()[:16], 16))
    if options:
        text = " ".join(str(v) for v in row_fields.values())
        return choose_option(list(options), text, rng)
    return " ".join(rng.choices(_WORDS, k=rng.randint(3, 8)))


def fill_schema(node: Any, root: Any, rng: random.Random, options: list[str], prompt: str,
                name: str | None = None) -> Any:
    """A value that fits ``node`` ($refs resolved in ``root``): the structured-answer generator,
    for the other modules."""
    return _fill(node, root, rng, options, prompt, name)


SCHEMA_MARKER = "matching this JSON schema:"


def schema_in_prompt(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema a prompt gives after ``SCHEMA_MARKER`` (as llmbatch_pd writes it for
    JSON-mode APIs such as DeepSeek's), or {} when there is none."""
    for message in messages:
        text = content_text(message.get("content"))
        at = text.find(SCHEMA_MARKER)
        if at < 0:
            continue
        try:
            found, _ = json.JSONDecoder().raw_decode(text[at + len(SCHEMA_MARKER):].lstrip())
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return {}


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


_DEPTH = 6
"""How deep recursive schemas ($ref to themselves) are filled before nulls and [] end them."""
_ANSWER_NAMES = frozenset(
    "answer label category class classification result choice output response verdict".split()
)
_BOUNDS = re.compile(r"\{([^{}]*)\}\s*$")
_NUMERIC = (
    "minimum maximum exclusiveMinimum exclusiveMaximum minLength maxLength minItems maxItems"
).split()
_FORMATS = {
    "date": lambda r: (date(2024, 1, 1) + timedelta(days=r.randrange(730))).isoformat(),
    "date-time": lambda r: f"{_FORMATS['date'](r)}T{r.randrange(24):02d}:{r.randrange(60):02d}:00Z",
    "time": lambda r: f"{r.randrange(24):02d}:{r.randrange(60):02d}:{r.randrange(60):02d}",
    "duration": lambda r: f"P{r.randint(1, 30)}D",
    "email": lambda r: f"{r.choice(_WORDS)}@example.com",
    "hostname": lambda r: f"{r.choice(_WORDS)}.example.com",
    "uri": lambda r: f"https://example.com/{r.choice(_WORDS)}",
    "ipv4": lambda r: f"192.0.2.{r.randint(1, 254)}",
    "ipv6": lambda r: f"2001:db8::{r.randint(1, 0xFFFF):x}",
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128), version=4)),
}
_FORMATS |= {  # pydantic's own names, which Anthropic's transform moves into the description
    "ipvanyaddress": _FORMATS["ipv4"],
    "uri-reference": _FORMATS["uri"],
    "idn-email": _FORMATS["email"],
    **{f"uuid{v}": lambda r, v=v: str(uuid.UUID(int=r.getrandbits(128), version=v)) for v in (1, 3, 4, 5)},
}
_FORMAT_NOTE = re.compile(r"\bformat: ([\w-]+)")


def _fill(
    node: Any,
    root: dict[str, Any],
    rng: random.Random,
    options: list[str],
    prompt: str,
    name: str | None = None,
    depth: int = 0,
) -> Any:
    """A value that fits a JSON schema, so structured-output requests parse and validate.

    Follows what pydantic models become after either SDK's transform: $defs/$ref, anyOf with
    null, enums, nested objects and arrays, string formats, and numeric/length bounds, which
    Anthropic's transform moves into the description as ``{minimum: 1, maximum: 5}``.
    """
    if not isinstance(node, dict):
        return None
    if "$ref" in node:
        target = resolve_ref(root, node["$ref"])
        return _fill(target, root, rng, options, prompt, name, depth + 1)
    if "const" in node:
        return node["const"]
    if node.get("enum"):
        return _pick_enum(list(node["enum"]), options, prompt, rng)
    for key in ("anyOf", "oneOf"):
        if node.get(key):
            variants = [v for v in node[key] if not (isinstance(v, dict) and v.get("type") == "null")]
            if not variants or (depth >= _DEPTH and len(variants) < len(node[key])):
                return None
            return _fill(variants[0], root, rng, options, prompt, name, depth + 1)
    if node.get("allOf"):
        merged: dict[str, Any] = {}
        for part in node["allOf"]:
            part = resolve_ref(root, part["$ref"]) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged |= part
        return _fill(merged, root, rng, options, prompt, name, depth + 1)
    kind = node.get("type", "object" if "properties" in node else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    bounds = _bounds(node)
    if kind == "object":
        props = node.get("properties", {})
        return {
            k: _fill(v, root, rng, options, prompt, k, depth + 1)
            for k, v in (props.items() if isinstance(props, dict) else ())
        }
    if kind == "array":
        n = 0 if depth >= _DEPTH else 2
        n = max(int(bounds.get("minItems", 0)), min(n, int(bounds.get("maxItems", n))))
        return [_fill(node.get("items", {}), root, rng, options, prompt, name, depth + 1)
                for _ in range(n)]
    if kind in ("integer", "number"):
        return _number(kind, bounds, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    fmt = node.get("format") or next(iter(_FORMAT_NOTE.findall(str(node.get("description")))), None)
    if fmt in _FORMATS:
        return _FORMATS[fmt](rng)
    if options and _about_options(name, node, prompt, options):
        text = choose_option(options, prompt, rng)
    else:
        text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    text = text.ljust(int(bounds.get("minLength", 0)), "x")
    return text[: int(bounds["maxLength"])] if "maxLength" in bounds else text


def resolve_ref(root: Any, ref: Any) -> Any:
    """The schema a local ``#/...`` reference points at, or {} when it points nowhere."""
    target: Any = root
    for part in str(ref).removeprefix("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        target = target.get(part, {}) if isinstance(target, dict) else {}
    return target


def _pick_enum(values: list[Any], options: list[str], prompt: str, rng: random.Random) -> Any:
    """An enum value: one the prompt offers if any, chosen like a free-text option."""
    texts = {str(v): v for v in values}
    offered = {o.lower() for o in options}
    overlap = [t for t in texts if t.lower() in offered]
    return texts[choose_option(overlap or list(texts), prompt, rng)]


def _about_options(name: str | None, node: dict[str, Any], prompt: str, options: list[str]) -> bool:
    """Whether a free string field is the prompt's choice: a top-level or generic answer name,
    a description naming an option, or a field name the prompt uses where it offers them."""
    if name is None or name.lower() in _ANSWER_NAMES:
        return True
    described = f"{node.get('description', '')} {node.get('title', '')}".lower()
    if any(re.search(rf"(?<!\w){re.escape(o.lower())}(?!\w)", described) for o in options):
        return True
    at = prompt.lower().find(options[0].lower())
    before = prompt[:at] if at >= 0 else prompt
    sentence = re.split(r"[.!?\n]", before)[-1].lower()
    words = re.findall(r"[a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower())
    return any(len(w) >= 3 and re.search(rf"\b{w}", sentence) for w in words)


def _bounds(node: dict[str, Any]) -> dict[str, float]:
    """Numeric and length limits, from the schema or from where Anthropic's transform put
    them (the end of the description)."""
    found: dict[str, float] = {}
    match = _BOUNDS.search(str(node.get("description", "")))
    if match:
        for item in match.group(1).split(","):
            key, _, value = item.partition(":")
            try:
                found[key.strip()] = float(value)
            except ValueError:
                pass
    for key in _NUMERIC:
        value = node.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[key] = float(value)
    return {k: v for k, v in found.items() if k in _NUMERIC}


def _number(kind: str, bounds: dict[str, float], rng: random.Random) -> int | float:
    """A number inside the bounds (10 wide when a side is open, 0..10 when both are)."""
    lo, hi = bounds.get("minimum", -math.inf), bounds.get("maximum", math.inf)
    if "exclusiveMinimum" in bounds:
        x = bounds["exclusiveMinimum"]
        lo = max(lo, math.floor(x) + 1 if kind == "integer" else x)
    if "exclusiveMaximum" in bounds:
        x = bounds["exclusiveMaximum"]
        hi = min(hi, math.ceil(x) - 1 if kind == "integer" else x)
    if math.isinf(lo) and math.isinf(hi):
        lo, hi = 0.0, 10.0
    elif math.isinf(lo):
        lo = hi - 10
    elif math.isinf(hi):
        hi = lo + 10
    if kind == "integer":
        return rng.randint(math.ceil(lo), max(math.ceil(lo), math.floor(hi)))
    value = round(lo + (hi - lo) * (0.1 + 0.8 * rng.random()), 2)
    return value if lo < value < hi or lo == hi else (lo + hi) / 2


def _broken(value: Any, schema: Any, rng: random.Random, *, keep_json: bool) -> str:
    """An answer a validating client must refuse: JSON cut short, or (always for tool input,
    which must stay an object) the value with a required field dropped or a field retyped."""
    text = json.dumps(value, ensure_ascii=False)
    if not keep_json and (not schema or rng.random() < 0.5 or not isinstance(value, dict) or not value):
        return text[: max(1, len(text) // 2)]
    if not isinstance(value, dict):
        return json.dumps({"unexpected": value})
    node = resolve_ref(schema, schema["$ref"]) if isinstance(schema, dict) and "$ref" in schema else schema
    required = [k for k in (node or {}).get("required", []) if k in value]
    broken = dict(value)
    if required:
        del broken[rng.choice(required)]
    elif broken:
        broken[next(iter(broken))] = [["?"]]  # no field takes a list of lists of strings
    else:
        broken["unexpected"] = True
    return json.dumps(broken, ensure_ascii=False)
