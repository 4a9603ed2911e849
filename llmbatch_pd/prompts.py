"""Templates -> requests: render ``{column}`` fields per row, safely, and key each request.

Only plain field names are allowed: attribute and index access (``{x.__class__}``,
``{x[0]}``) would let a template reach into Python objects, so it is rejected up front.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import TemplateError

MISSING_POLICIES = ("skip", "empty")
_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and the fields it needs, in order."""

    text: str
    fields: tuple[str, ...]
    _parts: tuple[tuple[str, str | None, str, str | None], ...]

    @classmethod
    def parse(cls, text: str, *, value_field: str | None = None) -> Template:
        """Parse and check ``text``; ``value_field`` names what ``{}`` means (for a Series)."""
        if not isinstance(text, str):
            raise TemplateError(f"the template must be a string, not {type(text).__name__}")
        try:
            parsed = list(_FORMATTER.parse(text))
        except ValueError as exc:
            raise TemplateError(
                f"cannot parse the template: {exc}. Write a literal brace as {{{{ or }}}}."
            ) from None
        parts, fields = [], []
        for literal, name, spec, conversion in parsed:
            if name is not None:
                name = _check_field(name, value_field)
                if spec and ("{" in spec or "}" in spec):
                    raise TemplateError(f"nested fields in a format spec are not allowed: {{{name}:{spec}}}")
                if conversion not in (None, "s", "r"):
                    raise TemplateError(f"unknown conversion !{conversion} in field {{{name}}}")
                if name not in fields:
                    fields.append(name)
            parts.append((literal, name, spec or "", conversion))
        return cls(text, tuple(fields), tuple(parts))

    def check_columns(self, columns: Sequence[Any]) -> None:
        """Every field must name a column; the error lists the columns there are."""
        names = {str(c) for c in columns}
        missing = [f for f in self.fields if f not in names]
        if missing:
            shown = ", ".join(repr(str(c)) for c in columns[:40])
            more = f" (and {len(columns) - 40} more)" if len(columns) > 40 else ""
            raise TemplateError(
                f"template field(s) {', '.join('{' + m + '}' for m in missing)} name no column. "
                f"Columns: {shown}{more}"
            )

    def render(self, values: Mapping[str, Any], missing: str = "skip") -> str:
        """Render one row. Raises MissingValue when a field is NA and ``missing='skip'``."""
        out = []
        for literal, name, spec, conversion in self._parts:
            out.append(literal)
            if name is None:
                continue
            value = values[name]
            if is_missing(value):
                if missing == "skip":
                    raise MissingValue(name)
                value = ""
            out.append(format_value(value, spec, conversion))
        return "".join(out)


class MissingValue(Exception):
    """A referenced cell is NA; the row gets an error and no request."""

    def __init__(self, field: str) -> None:
        super().__init__(f"missing value in column {field!r}: row not sent (use missing='empty' to send it anyway)")
        self.field = field


def _check_field(name: str, value_field: str | None) -> str:
    if name in ("", "value") and value_field is not None:
        return value_field  # a Series: {} and {value} mean the cell
    if name == "":
        raise TemplateError("empty field {} needs a column name here, like {title}")
    if name.isdigit():
        raise TemplateError(f"positional field {{{name}}} is not allowed; name a column instead")
    if "." in name or "[" in name:
        raise TemplateError(
            f"field {{{name}}} uses attribute or index access, which templates do not allow; "
            "name a column (put the value you need in a column of its own first)"
        )
    return name


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    # pandas.NA, pandas.NaT and numpy.datetime64('NaT') without importing pandas or numpy
    name = type(value).__name__
    if name in ("NAType", "NaTType"):
        return True
    if name in ("datetime64", "timedelta64") or name.startswith("float"):
        try:
            return bool(value != value)
        except (TypeError, ValueError):
            return False
    return False


def format_value(value: Any, spec: str = "", conversion: str | None = None) -> str:
    """A cell as text: strings as they are, containers as JSON, dates in ISO form."""
    if conversion == "r":
        value = repr(value)
    elif isinstance(value, (list, tuple, dict)) and not spec:
        return json.dumps(value, ensure_ascii=False, default=str)
    elif isinstance(value, (_dt.datetime, _dt.date)) and not spec:
        return value.isoformat()
    elif type(value).__name__ == "ndarray" and not spec:
        return json.dumps(value.tolist(), ensure_ascii=False, default=str)
    if spec:
        try:
            return format(value, spec)
        except (ValueError, TypeError) as exc:
            raise TemplateError(f"format spec {spec!r} does not fit value {value!r}: {exc}") from None
    return str(value)


def build_messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    if system:
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    return [{"role": "user", "content": prompt}]


def request_key(endpoint: str, model: str, messages: Iterable[Mapping], params: Mapping) -> str:
    """A stable digest of everything that changes the answer (never the API key)."""
    payload = json.dumps(
        [endpoint, model, list(messages), {k: v for k, v in sorted(params.items()) if v is not None}],
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()
