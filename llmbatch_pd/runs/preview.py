"""``df.llm.preview``: what the first requests of a run would be, before anything is paid for.

Walked from the run's own request stream (the code that sends them), without the cache, so
what is shown is what would go out: the body the provider would receive (never the headers,
which hold the key) and our count of its input tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .base import RowValues
from .chat import Run
from .spec import RunSpec


@dataclass(frozen=True)
class Preview:
    """One request: the row it answers, its messages and whole body, its input tokens."""

    row: int
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    input_tokens: int


def first_requests(spec: RunSpec, row_values: RowValues, n_rows: int, n: int) -> list[Preview]:
    """The first ``n`` requests a run of ``spec`` over ``n_rows`` rows would send (rows that
    would not be sent, missing values, duplicates, are passed over as the run passes them)."""
    run = Run(spec, row_values, n_rows)  # no cache file opened: every row is "to send"
    out = []
    for request in islice(run._requests(), n):
        _url, _headers, body = spec.provider.prepare(request)
        out.append(Preview(request.index, request.messages, json.loads(body),
                           request.est_input_tokens))
    return out
