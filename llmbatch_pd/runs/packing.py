"""The wire side of ``pack=`` (CONTRACTS C1), pure functions: the packed request's text, the
check of a packed answer's ids, the split of a pack's usage over its rows, and the size
``pack="auto"`` picks. ``pack.py`` runs them."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from ..core import errors
from ..core.types import Usage

if TYPE_CHECKING:  # pydantic loads only when pack= is used
    from ..core.schema import PackedSchema
    from .spec import RunSpec

PREAMBLE = ("Answer the task below for each row of the JSON array that follows it. Return one object "
            "per row with the row's id, exactly as given, and {what}: one object for every row, in the "
            "rows' order, and no other objects. In the task, <name> stands for the row's value of "
            "name.\n\nTask:\n")
"""The packed request's fixed opening (``{what}``: the answer, or the schema's fields)."""
MAX_AUTO = 20  # pack="auto" never packs more rows (Lin et al. 2024: accuracy holds to 16-32 rows)
AUTO_TARGET_OUTPUT = 3000  # output tokens "auto" aims at per pack (~30 s of answer, as openaivec)
AUTO_SAMPLE = 64  # rows whose prompt sizes "auto" looks at
PACK_OUTPUT_CAP = 16_384  # max_tokens of a pack: every current model accepts this many
ROW_OVERHEAD = 12  # output tokens each row's object adds around its answer ({"id":"7","answer":...})


def instructions(spec: RunSpec, packed: PackedSchema) -> str:
    """The same text for every pack of a run (the part a provider can cache)."""
    what = "that row's answer" if spec.schema is None else "that row's fields (" + ", ".join(packed.fields) + ")"
    return PREAMBLE.format(what=what) + spec.template.placeholders()


def rows_json(rows: list[Mapping[str, str]]) -> str:
    """The rows of one pack, ids "1".."k" in order, fields in the template's order."""
    return json.dumps([{"id": str(j), **fields} for j, fields in enumerate(rows, 1)], ensure_ascii=False)


def packed_text(head: str, rows: list[Mapping[str, str]]) -> str:
    return f"{head}\n\n<rows>\n{rows_json(rows)}\n</rows>"


def unpack(packed: PackedSchema, text: str | None, k: int) -> tuple[list[str | None], list[str]]:
    """Per row of a pack of ``k`` (in order), its answer text or None; and what was wrong.
    A row gets an answer only when exactly one object carries its id and that object fits;
    an object with an id that was not sent is ignored (and reported). Raises InvalidOutput
    when the whole answer is not of the packed shape."""
    items = packed.check(text)["rows"]
    found: dict[str, list[Any]] = {}
    problems: list[str] = []
    for obj in items:
        key = _sent_id(obj.get("id")) if isinstance(obj, dict) else None
        found.setdefault(key or f"(not an id: {obj.get('id') if isinstance(obj, dict) else obj!r})",
                         []).append(obj)
    wanted = {str(j) for j in range(1, k + 1)}
    unknown = [key for key in found if key not in wanted]
    if unknown:
        problems.append(f"ids not sent: {', '.join(sorted(unknown)[:5])}")
    answers: list[str | None] = []
    for j in range(1, k + 1):
        objs = found.get(str(j), [])
        if len(objs) != 1:
            problems.append(f"id {j} {'missing' if not objs else f'answered {len(objs)} times'}")
            answers.append(None)
            continue
        try:
            answers.append(packed.item(objs[0]))
        except errors.InvalidOutput as exc:
            problems.append(f"id {j}: {exc.message}")
            answers.append(None)
    return answers, problems


def _sent_id(key: Any) -> str | None:
    """An item's id as the pack sent it (``"3"``): a string, or a whole number a JSON-mode
    model wrote without quotes (``3``, ``3.0``); anything else is no id."""
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    return None


def apportion(total: int, weights: list[float]) -> list[int]:
    """``total`` split in whole numbers proportional to ``weights``, adding up to it exactly."""
    if not weights:
        return []
    mass = sum(weights)
    if mass <= 0:
        weights, mass = [1.0] * len(weights), float(len(weights))
    exact = [total * w / mass for w in weights]
    parts = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - parts[i], reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def shares(usage: Usage, inputs: list[float], outputs: list[float]) -> list[Usage]:
    """A pack's usage split over its answered rows: answer tokens by their answers' lengths,
    every prompt count (cached, written, ...) by the rows' prompt sizes, the reported cost by
    both; the parts add up to the whole."""
    n = len(inputs)
    parts = [Usage() for _ in range(n)]
    for f in fields(Usage):
        total = getattr(usage, f.name)
        if isinstance(total, int) and not isinstance(total, bool):
            for part, value in zip(parts, apportion(total, outputs if f.name == "output_tokens" else inputs),
                                   strict=True):
                setattr(part, f.name, value)
    if usage.cost is not None:
        both = [a + b for a, b in zip(inputs, outputs, strict=True)]
        mass = sum(both) or 1.0
        for part, weight in zip(parts, both, strict=True):
            part.cost = usage.cost * weight / mass
    return parts


def pack_output_limit(per_row: int | None, k: int) -> int | None:
    """The output limit of a pack of ``k`` rows: k rows' limits (and their ids), capped."""
    if per_row is None:
        return None
    return min(PACK_OUTPUT_CAP, k * (per_row + ROW_OVERHEAD))


def auto_size(row_tokens: list[int], head_tokens: int, window: int | None, per_row_output: float,
              single_tokens: list[int] | None = None, output_price_ratio: float = 4.0,
              output_cap: int = PACK_OUTPUT_CAP) -> int:
    """``pack="auto"``: as many rows as keep a pack's answer near ``AUTO_TARGET_OUTPUT`` tokens
    and within the output cap, its prompt within half the context window, and at most
    ``MAX_AUTO`` rows; and 1 (no packing) when that many rows a request would not cost less
    than one request a row. ``row_tokens``: each row's object in the pack; ``head_tokens``:
    what a pack states once; ``single_tokens``: each row's own prompt;
    ``output_price_ratio``: an output token's price over an input token's."""
    per_out = max(1.0, per_row_output) + ROW_OVERHEAD
    k = min(MAX_AUTO, int(AUTO_TARGET_OUTPUT // per_out), int(output_cap * 0.8 // per_out))
    if window and row_tokens:
        largest = max(row_tokens)
        k = min(k, int(max(0, window // 2 - head_tokens) // max(1, largest)))
    k = max(1, k)
    if single_tokens and row_tokens and k > 1:
        alone = sum(single_tokens) / len(single_tokens)
        packed = head_tokens / k + sum(row_tokens) / len(row_tokens) + ROW_OVERHEAD * output_price_ratio
        if packed >= alone:
            return 1
    return k
