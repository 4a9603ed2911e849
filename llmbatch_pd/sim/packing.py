"""Packed requests: several table rows in one request, each row answered under its own id.

A request is packed (CONTRACTS C1) when its JSON schema (OpenAI ``response_format.json_schema``,
Anthropic ``output_config.format`` or a forced tool; in JSON mode the schema its prompt spells
out, ``answers.schema_in_prompt``) has a top-level property ``rows``, an
array of objects with an ``id`` property, AND its last user message holds ``<rows>\\n`` JSON
array of objects with "id" ``\\n</rows>``. The answer is ``{"rows": [{"id": ..., "answer": ...},
...]}``, one object per row in the order sent, where the answer is
``answers.packed_answer(fields, options)``: ``fields`` is the row's object without its id and
``options`` what the instructions before ``<rows>`` offer (``answers.find_options``), so a test
without options checks every row against ``packed_answer(fields)``. With other item properties
than id/answer (``schema=``) they are filled by the structured-answer generator seeded by the
fields alone, so those values too belong to one row.

Faults, per row, on seeded dice: ``fault_pack_drop`` leaves the row out, ``fault_pack_dup``
answers it twice (right after its own answer, a copy carrying the next row's answer; never for
a dropped row, which would be a wrong answer no id check can see), ``fault_pack_invent`` adds an object
whose id was never sent (with another row's answer). ``PackLog`` keeps, per packed request
answered, the ids sent and the ids answered (read back from the answer as sent, so a cut or
broken answer shows what a client could read).

Sizes, in the simulator's tokens: an answer of ``packed_answer`` is 5.5 tokens on average (3 to
8 words), each row's object adds 17 (``{"id": "1", "answer": ""}``) and 1 for the comma, the
wrapper ``{"rows": []}`` 8.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .answers import (
    Answer,
    fill_schema,
    find_options,
    format_schema,
    packed_answer,
    resolve_ref,
    structured_answer,
)
from .config import SimConfig
from .tokens import content_text

OPEN, CLOSE = "<rows>\n", "\n</rows>"


@dataclass(frozen=True)
class Packed:
    """A packed request: its rows as sent, the schema of one answer object, and the rest."""

    rows: list[dict[str, Any]]
    item: dict[str, Any]  # the schema of one object of "rows"
    root: dict[str, Any]  # the whole schema, for $refs
    options: list[str]
    tool: str | None


def find_packed(messages: list[dict[str, Any]], fmt: dict[str, Any] | None) -> Packed | None:
    """The packed request in a chat-format conversation, or None if it is not one."""
    if (fmt or {}).get("type") not in ("json_schema", "json_object", "tool"):
        return None
    root, tool = format_schema(fmt or {}, messages)
    item = _rows_item(root)
    if item is None:
        return None
    text = next((content_text(m.get("content")) for m in reversed(messages)
                 if m.get("role") == "user"), "")
    start, end = text.rfind(OPEN), text.rfind(CLOSE)
    if start < 0 or end < start + len(OPEN) - 1:
        return None
    try:
        rows = json.loads(text[start + len(OPEN):end])
    except ValueError:
        return None
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, dict) and "id" in r for r in rows):
        return None
    return Packed(rows, item, root, find_options(text[:start]), tool)


def _rows_item(root: Any) -> dict[str, Any] | None:
    """The schema of one object of a top-level "rows" array with an "id" property, or None."""
    if not isinstance(root, dict):
        return None
    rows = (root.get("properties") or {}).get("rows")
    if isinstance(rows, dict) and "$ref" in rows:
        rows = resolve_ref(root, rows["$ref"])
    if not isinstance(rows, dict) or rows.get("type") != "array":
        return None
    item = rows.get("items")
    if isinstance(item, dict) and "$ref" in item:
        item = resolve_ref(root, item["$ref"])
    if not isinstance(item, dict) or "id" not in (item.get("properties") or {}):
        return None
    return item


def row_value(packed: Packed, fields: dict[str, Any]) -> dict[str, Any]:
    """The answer object of one row, without its id: deterministic from its fields."""
    props = {k: v for k, v in (packed.item.get("properties") or {}).items() if k != "id"}
    if set(props) <= {"answer"}:
        return {"answer": packed_answer(fields, packed.options)}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    rng = random.Random(int(hashlib.sha256(f"fields\n{canonical}".encode()).hexdigest()[:16], 16))
    prompt = " ".join(str(v) for v in fields.values())
    return {k: fill_schema(v, packed.root, rng, packed.options, prompt, k) for k, v in props.items()}


@dataclass(frozen=True)
class PackedReply:
    answer: Answer
    ids_sent: list[str]
    ids_answered: list[str]
    faults: Counter[str]


def answer_packed(packed: Packed, cfg: SimConfig, rng: random.Random, *, invalid: bool = False,
                  max_tokens: int | None = None) -> PackedReply:
    """Answer every row by id, with the pack fault knobs' dice drawn from ``rng``."""
    rows, out, faults = packed.rows, [], Counter[str]()
    sent = [str(r["id"]) for r in rows]
    fields = [{k: v for k, v in r.items() if k != "id"} for r in rows]
    fresh = len(rows)
    for i, row in enumerate(rows):
        drop, dup, invent = rng.random(), rng.random(), rng.random()  # three dice for every row
        other = fields[(i + 1) % len(rows)] if len(rows) > 1 else {**fields[i], "_": "other"}
        dropped = drop < cfg.fault_pack_drop
        if dropped:
            faults["dropped"] += 1
        else:
            out.append({"id": row["id"], **row_value(packed, fields[i])})
        if dup < cfg.fault_pack_dup and not dropped:  # a lone wrong answer no id check could see
            faults["duplicated"] += 1
            out.append({"id": row["id"], **row_value(packed, other)})
        if invent < cfg.fault_pack_invent:
            faults["invented"] += 1
            fresh += 1
            while str(fresh) in sent:
                fresh += 1
            out.append({"id": str(fresh), **row_value(packed, other)})
    answer = structured_answer({"rows": out}, packed.root, rng, packed.tool, invalid=invalid,
                               max_tokens=max_tokens)
    return PackedReply(answer, sent, _ids_in(answer.text), faults)


def _ids_in(text: str) -> list[str]:
    """The ids a client can read from the answer as sent ([] when it does not parse)."""
    try:
        value = json.loads(text)
    except ValueError:
        return []
    rows = value.get("rows") if isinstance(value, dict) else None
    if not isinstance(rows, list):
        return []
    return [str(r["id"]) for r in rows if isinstance(r, dict) and "id" in r]


class PackLog:
    """Every packed request answered (real time and batch lines): ids sent and answered."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.totals: Counter[str] = Counter()

    def add(self, reply: PackedReply, **where: Any) -> dict[str, Any]:
        record = {**where, "ids_sent": reply.ids_sent, "ids_answered": reply.ids_answered}
        self.records.append(record)
        self.totals["requests"] += 1
        self.totals["rows_sent"] += len(reply.ids_sent)
        self.totals["rows_answered"] += len(set(reply.ids_answered) & set(reply.ids_sent))
        self.totals.update(reply.faults)
        return record

    def clear(self) -> None:
        self.records.clear()
        self.totals.clear()

    def stats(self) -> dict[str, int]:
        names = ("requests", "rows_sent", "rows_answered", "dropped", "duplicated", "invented")
        return {name: self.totals[name] for name in names}
