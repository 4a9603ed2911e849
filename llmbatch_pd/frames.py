"""The frame side of a call, the one place (with the accessor) that touches pandas: the rows
read out of the frame, and the run's results put back on its index as typed columns (answers,
one column per ``schema=`` field, errors, usage), as embed's vectors, and as the result frame.

A ``schema=`` field's Python type decides its column's dtype here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .core import errors, journal
from .core.defaults import OUTPUT

if TYPE_CHECKING:
    from .core.schema import OutputSchema

CHUNK = 2048
"""Rows read from the frame at a time."""
REPORT_ATTR = "llm_report"
ERRORS_ATTR = "llm_errors"
LAST: dict[str, Any] = {}
"""The result and report of the last run in this process (``last_result()``, ``last_report()``)."""


_SURROGATE = re.compile("[\ud800-\udfff]")  # in a Python str every surrogate is a lone one


def strings(values: list) -> Any:
    """A string column. pandas' pyarrow-backed strings refuse a lone surrogate (JSON may
    carry one as an escape, a cell read with the wrong codec holds one): such text is kept
    with U+FFFD in its place instead of losing every answer of a paid run."""
    try:
        return pd.array(values, dtype="string")
    except UnicodeEncodeError:
        return pd.array([_SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v for v in values],
                        dtype="string")


def load_reviews() -> pd.DataFrame:
    """The bundled sample: 300 short product reviews (shop, product, rating, language, text),
    the demo's and the notebooks' data: ``llmbatch_pd.load_reviews()``."""
    return pd.read_csv(files("llmbatch_pd") / "data" / "reviews.csv")


def remember(report: Any, result: Any = None) -> None:
    """Keep the last run's report and result, and put the run in the kernel's journal
    (``%llm_runs``; a background job's entry is the job's own, updated here)."""
    journal.record(report, "run")
    LAST["report"] = report
    if result is not None:
        LAST["result"] = result


# -- rows out --------------------------------------------------------------------------------


def row_source(df: pd.DataFrame, fields: tuple[str, ...]) -> Callable[..., Iterator[dict]]:
    """The rows a run reads: each row's template fields as a dict, in chunks (no full copy of
    the columns is made); ``rows(positions)`` reads only those rows (a pilot's)."""
    colmap: dict[str, Any] = {}
    for col in df.columns:
        colmap.setdefault(str(col), col)

    def rows(positions: list[int] | None = None) -> Iterator[dict]:
        frame = df if positions is None else df.iloc[positions]
        return _iter_rows(frame, fields, colmap)

    return rows


def _iter_rows(df: pd.DataFrame, fields: tuple[str, ...], colmap: dict[str, Any]) -> Iterator[dict]:
    columns = [df[colmap[f]] for f in fields]
    n = len(df)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        if not columns:
            for _ in range(start, stop):
                yield {}
            continue
        chunks = [c.iloc[start:stop].tolist() for c in columns]
        for values in zip(*chunks, strict=True):
            yield dict(zip(fields, values, strict=True))


_COPY_ON_WRITE = int(pd.__version__.split(".")[0]) >= 3 or pd.get_option("mode.copy_on_write") is True


def snapshot(df: pd.DataFrame) -> pd.DataFrame:
    """The frame as it is now, for a run that reads it later on the loop thread. Under
    copy-on-write (pandas 3) a shallow copy is free and later edits of the caller's frame
    do not reach it; pandas 2 without it needs a real copy."""
    return df.copy(deep=not _COPY_ON_WRITE)


def series_frame(s: pd.Series) -> pd.DataFrame:
    """The cells as the one column ``{}`` names, whatever the Series is called."""
    return s.to_frame(name="text")


def value_frame(s: pd.Series) -> pd.DataFrame:
    """The Series as a one-column frame under its own name (``value`` when it has none)."""
    return s.to_frame(name=s.name if s.name is not None else "value")


# -- results in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Naming:
    """The names of the columns ``apply`` adds: ``output`` (suffixed with the model's name,
    ``label``, side by side), its error, the usage columns (``usage=True``), and the
    ``schema=`` fields under their own names (or ``{output}_{field}`` with ``output=``)."""

    output: str
    label: str | None = None
    usage: bool = False

    @property
    def column(self) -> str:
        return f"{self.output}_{self.label}" if self.label else self.output

    def field(self, name: str) -> str:
        base = name if self.output == OUTPUT else f"{self.output}_{name}"
        return f"{base}_{self.label}" if self.label else base

    def new(self, schema: OutputSchema | None) -> list[str]:
        """The names ``chat_columns`` makes (the schema's fields are checked on their own)."""
        col = self.column
        names = [col] if schema is None else []
        names.append(f"{col}_error")
        if self.usage:
            names += [f"{col}_input_tokens", f"{col}_output_tokens", f"{col}_cost"]
        return names


def chat_columns(run: Any, naming: Naming) -> dict[str, Any]:
    """A chat run's new columns, by name: the answer (or one per schema field), the error,
    usage. ``run`` is a ``runs.chat.Run``."""
    spec, col = run.spec, naming.column
    cols: dict[str, Any] = {}
    if spec.schema is None:
        cols[col] = strings(run.answers)
    else:
        for name, column in field_columns(spec.schema, run.answers, run.invalidate).items():
            cols[naming.field(name)] = column
    cols[f"{col}_error"] = strings(run.errors)
    if naming.usage:
        paid = run.usages  # None where the row got no answer
        priced = spec.price is not None
        cols[f"{col}_input_tokens"] = pd.array(
            [u.input_tokens if u is not None else None for u in paid], dtype="Int64")
        cols[f"{col}_output_tokens"] = pd.array(
            [u.output_tokens if u is not None else None for u in paid], dtype="Int64")
        cols[f"{col}_cost"] = pd.array(
            [spec.cost(u) if u is not None and (priced or u.cost is not None) else None
             for u in paid], dtype="Float64")
    return cols


def assemble(df: pd.DataFrame, columns: dict[str, Any], report: Any,
             only_new: bool = False) -> pd.DataFrame | pd.Series:
    """A copy of the frame with the new columns, the report in its attrs, kept as the last.
    ``only_new`` (``df.llm.answers``, ``s.llm.apply``): the new columns alone, on the frame's
    index; one answer column (with its error column) comes as a Series for a one-line assign
    (``df["label"] = ...``), the failed rows' reasons in ``attrs["llm_errors"]``."""
    if only_new:
        out = _new_columns(df.index, columns)
    else:
        out = df.copy()
        for name, column in columns.items():
            out[name] = column
    out.attrs[REPORT_ATTR] = report
    remember(report, out)
    return out


def _new_columns(index: pd.Index, columns: dict[str, Any]) -> pd.DataFrame | pd.Series:
    names = list(columns)
    if len(names) == 2 and names[1] == f"{names[0]}_error":
        answers = pd.Series(columns[names[0]], index=index, name=names[0])
        reasons = pd.Series(columns[names[1]], index=index)
        answers.attrs[ERRORS_ATTR] = reasons.dropna().to_dict()
        return answers
    out = pd.DataFrame(index=index)
    for name, column in columns.items():
        out[name] = column
    return out


def vectors(run: Any, index: pd.Index, output: str, as_array: bool) -> pd.Series | np.ndarray:
    """An embed run's vectors: a Series of float32 vectors on the index (None where a row
    failed, the reasons in ``attrs["llm_errors"]``), or with ``as_array`` an (n, dim) float32
    array, NaN rows failed. ``run`` is a ``runs.embed.EmbedRun``."""
    errs = run.row_errors()
    matrix = run.matrix()
    run.report.estimate = run.report.estimate or run.estimate
    if as_array:
        remember(run.report, matrix)
        return matrix
    cells = np.empty(len(index), dtype=object)  # each cell one row of the matrix (a view)
    for i, ok in enumerate(run.has_vector()):
        if ok:
            cells[i] = matrix[i]
    out = pd.Series(cells, index=index, name=output, dtype=object)
    # a plain dict, not a Series: pandas compares attrs on concat, and Series refuse that
    keys = index if index.is_unique else range(len(index))
    out.attrs[ERRORS_ATTR] = {k: e for k, e in zip(keys, errs, strict=True) if e is not None}
    out.attrs[REPORT_ATTR] = run.report
    remember(run.report, out)
    return out


def preview_frame(index: pd.Index, shown: list) -> pd.DataFrame:
    """``df.llm.preview``'s table: one row per request (``runs.preview.Preview``), on the
    index of the row it answers."""
    system = [next((m["content"] for m in p.messages if m["role"] == "system"), None) for p in shown]
    return pd.DataFrame({"system": strings(system),
                         "prompt": strings([p.messages[-1]["content"] for p in shown]),
                         "input_tokens": pd.array([p.input_tokens for p in shown], dtype="Int64"),
                         "body": [p.body for p in shown]},
                        index=index[[p.row for p in shown]])


def field_columns(schema: OutputSchema, answers: list,
                  on_invalid: Callable[[int, str], None]) -> dict[str, Any]:
    """One column per schema field, typed: Int64, Float64, boolean, string, category (Literal
    and Enum fields), datetime64 (dates and times), object (lists, dicts, nested models).
    An answer that no longer validates (a cached one, after the model changed) is handed to
    ``on_invalid`` (row, reason), which fails its row."""
    import pydantic  # loads with the first schema= (core.schema), not with the package

    values: dict[str, list] = {name: [None] * len(answers) for name in schema.fields}
    for i, text in enumerate(answers):
        if text is None:
            continue
        try:
            row = schema.check(text)
        except errors.InvalidOutput as exc:
            on_invalid(i, str(exc))
            continue
        for name, value in row.items():
            values[name][i] = _plain(value, pydantic.BaseModel)
    fields = schema.model.model_fields
    return {name: _typed(column, schema.kinds[name], fields[name].annotation)
            for name, column in values.items()}


def _plain(value: Any, model: type) -> Any:
    """Enum members as their values, nested models as dicts: what a cell should hold."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, model):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v, model) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, model) for k, v in value.items()}
    return value


def _typed(column: list, kind: str, annotation: Any) -> Any:
    if kind == "int":
        return pd.array(column, dtype="Int64")
    if kind == "float":
        return pd.array(column, dtype="Float64")
    if kind == "bool":
        return pd.array(column, dtype="boolean")
    if kind == "str":
        return strings(column)
    if kind == "category":
        from .core.schema import categories

        allowed = categories(annotation) or sorted({str(v) for v in column if v is not None})
        return pd.Categorical([None if v is None else str(v) for v in column], categories=allowed)
    if kind in ("datetime", "date"):
        aware = any(getattr(v, "tzinfo", None) is not None for v in column)
        return pd.to_datetime(pd.Series(column, dtype=object), utc=aware).array
    cells = np.empty(len(column), dtype=object)
    for i, value in enumerate(column):  # one by one: lists must stay lists, not a 2-D block
        cells[i] = value
    return cells
