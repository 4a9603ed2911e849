"""Templates -> requests: render ``{column}`` fields per row, safely, and key each request.

Only plain field names are allowed: attribute and index access (``{x.__class__}``,
``{x[0]}``) would let a template reach into Python objects, so it is rejected up front.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
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
                    raise TemplateError(
                        f"nested fields in a format spec are not allowed: {{{name}:{spec}}}"
                        f"{_brace_hint(text)}")
                if conversion not in (None, "s", "r"):
                    raise TemplateError(f"unknown conversion !{conversion} in field {{{name}}}")
                if name not in fields:
                    fields.append(name)
            parts.append((literal, name, spec or "", conversion))
        return cls(text, tuple(fields), tuple(parts))

    @property
    def prefix(self) -> str:
        """The literal text before the first field: the same in every row's prompt, so the
        part a provider can cache (and a packed request states once)."""
        out = []
        for literal, name, _spec, _conversion in self._parts:
            out.append(literal)
            if name is not None:
                break
        return "".join(out)

    def placeholders(self) -> str:
        """The template with every field shown as ``<field>``: the same text for every row, so
        a packed request states it once (before the rows' values)."""
        return "".join(literal + (f"<{name}>" if name is not None else "")
                       for literal, name, _spec, _conversion in self._parts)

    def render_fields(self, values: Mapping[str, Any], missing: str = "skip") -> dict[str, str]:
        """One row's fields as ``render`` would put them in the prompt (each with the format
        spec of its first place in the template), in the template's order. Raises like
        ``render``."""
        out: dict[str, str] = {}
        for _literal, name, spec, conversion in self._parts:
            if name is not None and name not in out:
                out[name] = _field(values, name, spec, conversion, missing)
        return out

    def check_columns(self, columns: Sequence[Any]) -> None:
        """Every field must name a column; the error lists the columns there are."""
        names = {str(c) for c in columns}
        missing = [f for f in self.fields if f not in names]
        if missing:
            shown = ", ".join(repr(str(c)) for c in columns[:40])
            more = f" (and {len(columns) - 40} more)" if len(columns) > 40 else ""
            raise TemplateError(
                f"template field(s) {', '.join('{' + m + '}' for m in missing)} name no column. "
                f"Columns: {shown}{more}{self._literal_hint(set(missing))}"
            )

    def _literal_hint(self, missing: set[str]) -> str:
        """Fields that look like JSON (``{"label": ...}``) were meant as literal braces:
        say so, with the template as it should be written."""
        if not any(_looks_literal(name, spec) for _, name, spec, _ in self._parts if name in missing):
            return ". A literal brace is written {{ or }}"
        fixed = "".join(_escape(literal) + (_as_literal(name, spec, conv) if name in missing else
                                            _as_field(name, spec, conv) if name is not None else "")
                        for literal, name, spec, conv in self._parts)
        return (". To put braces in the prompt itself (JSON, code), double them: {{ and }}. "
                f"The template would then read: {_clip(fixed)}")

    def render(self, values: Mapping[str, Any], missing: str = "skip") -> str:
        """Render one row. Raises MissingValue when a field is NA and ``missing='skip'``, and
        CellError when a value does not fit its field's format spec (both end only the row)."""
        out = []
        for literal, name, spec, conversion in self._parts:
            out.append(literal)
            if name is None:
                continue
            out.append(_field(values, name, spec, conversion, missing))
        return "".join(out)

    def repeats(self, rows: Iterable[Mapping[str, Any]], n: int, missing: str = "skip") -> Any:
        """Per row (a numpy bool array), whether its prompt may occur more than once: only
        those rows need a place in a run's de-duplication map. Judged on the rendered prompt,
        not the values, so rows whose different values render the same prompt ({p:.0f} on
        1.0 and 1.001; None and "" under missing='empty') are sent once. One render pass and
        about 25 bytes a row while it runs; a hash collision only tracks a row that need not be."""
        import numpy as np

        def digests() -> Iterable[int]:
            for i, values in enumerate(rows):
                try:
                    yield hash(self.render(values, missing))
                except (MissingValue, CellError):
                    yield i  # not a request: any value will do
        hashes = np.fromiter(digests(), dtype=np.int64, count=n)
        order = np.argsort(hashes)  # sorted, equal hashes sit side by side (~25 bytes a row)
        ranked = hashes[order]
        del hashes
        same = ranked[1:] == ranked[:-1]
        flags = np.zeros(n, dtype=bool)
        flags[1:] |= same
        flags[:-1] |= same
        repeats = np.empty(n, dtype=bool)
        repeats[order] = flags
        return repeats


def _field(values: Mapping[str, Any], name: str, spec: str, conversion: str | None,
           missing: str) -> str:
    """One field of a row as the prompt shows it. Raises MissingValue for an NA under
    ``missing='skip'``, CellError when the value does not fit its format spec."""
    value = values[name]
    if is_missing(value):
        if missing == "skip":
            raise MissingValue(name)
        value = ""
    try:
        return format_value(value, spec, conversion)
    except TemplateError as exc:
        raise CellError(name, value, spec, exc.__cause__ or exc) from None
    except Exception as exc:  # a value whose str() or repr() fails: its row alone
        raise CellError(name, value, spec, exc) from None


class MissingValue(Exception):
    """A referenced cell is NA; the row gets an error and no request."""

    def __init__(self, field: str) -> None:
        super().__init__(f"missing value in column {field!r}: row not sent (use missing='empty' to send it anyway)")
        self.field = field


class CellError(Exception):
    """A cell that does not fit its field's format spec (``{price:.2f}`` on "n/a"): that row
    gets an error and no request; the other rows go on."""

    def __init__(self, field: str, value: Any, spec: str, why: BaseException) -> None:
        try:
            shown = repr(value)
        except Exception:
            shown = f"<{type(value).__name__} object>"
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        kind = type(value).__name__
        if spec:
            what = (f"cannot render {{{field}:{spec}}}: the value {shown} ({kind}) does not fit "
                    f"the format spec {spec!r} ({why})")
        else:
            what = f"cannot render {{{field}}}: the value {shown} ({kind}) cannot be written as text ({why})"
        super().__init__(f"{what}: row not sent")
        self.field = field


class BadText(Exception):
    """A rendered prompt that is not valid Unicode (a lone surrogate from a badly decoded
    file): it cannot be sent as JSON, so its row fails alone."""

    def __init__(self, exc: UnicodeEncodeError) -> None:
        bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else ""
        super().__init__(
            f"the prompt holds text that is not valid Unicode ({bad!r}, {exc.reason}; often a "
            "file read with the wrong encoding): row not sent")


def _looks_literal(name: str, spec: str) -> bool:
    """A "field" that is really JSON or code: a quoted key, spaces, or a spec starting
    with a space (``{"label": ...}`` parses as field '"label"' with spec ' ...')."""
    return any(c in name for c in "\"' \n\t") or spec[:1].isspace()


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _as_field(name: str, spec: str, conversion: str | None) -> str:
    return "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"


def _as_literal(name: str, spec: str, conversion: str | None) -> str:
    return _escape(_as_field(name, spec, conversion))


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _brace_hint(text: str) -> str:
    """For a nested-braces error: JSON in a template needs doubled braces."""
    if "{{" in text:
        return ". A literal brace is written {{ or }}"
    fixed = re.sub(r"\{\{(\w+)\}\}", r"{\1}", _escape(text))  # plain {column} fields stay
    return (". To put braces in the prompt itself (JSON, code), double them: {{ and }}; "
            f"the template would then read: {_clip(fixed)}")


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
            raise TemplateError(f"format spec {spec!r} does not fit value {value!r}: {exc}") from exc
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
