"""Result assembly for ``schema=``: validated answers -> one typed pandas column per field.

Kept apart from the accessor: this is where a field's Python type decides its dtype.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pydantic

from .core import errors
from .core.schema import OutputSchema, categories


def field_columns(schema: OutputSchema, answers: list,
                  on_invalid: Callable[[int, str], None]) -> dict[str, Any]:
    """One column per schema field, typed: Int64, Float64, boolean, string, category (Literal
    and Enum fields), datetime64 (dates and times), object (lists, dicts, nested models).
    An answer that no longer validates (a cached one, after the model changed) is handed to
    ``on_invalid`` (row, reason), which fails its row."""
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
            values[name][i] = _plain(value)
    fields = schema.model.model_fields
    return {name: _typed(column, schema.kinds[name], fields[name].annotation)
            for name, column in values.items()}


def _plain(value: Any) -> Any:
    """Enum members as their values, nested models as dicts: what a cell should hold."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _typed(column: list, kind: str, annotation: Any) -> Any:
    if kind == "int":
        return pd.array(column, dtype="Int64")
    if kind == "float":
        return pd.array(column, dtype="Float64")
    if kind == "bool":
        return pd.array(column, dtype="boolean")
    if kind == "str":
        return pd.array(column, dtype="string")
    if kind == "category":
        allowed = categories(annotation) or sorted({str(v) for v in column if v is not None})
        return pd.Categorical([None if v is None else str(v) for v in column], categories=allowed)
    if kind in ("datetime", "date"):
        aware = any(getattr(v, "tzinfo", None) is not None for v in column)
        return pd.to_datetime(pd.Series(column, dtype=object), utc=aware).array
    cells = np.empty(len(column), dtype=object)
    for i, value in enumerate(column):  # one by one: lists must stay lists, not a 2-D block
        cells[i] = value
    return cells
