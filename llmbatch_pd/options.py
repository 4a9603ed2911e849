"""The options ``df.llm.apply``/``submit``/``estimate``/``embed`` take, checked before anything
is sent: an unknown name (a typo) is refused naming the option meant, a bad value says what
is wanted, and a result column that would overwrite one of the frame's is refused."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from . import errors
from .numbers import money
from .plan import Estimate
from .run import RunSpec, check_limits
from .types import Request, Usage

RUN_OPTIONS = ("base_url", "api_key", "concurrency", "rpm", "tpm", "max_retries", "timeout",
               "missing", "budget", "cache", "prices", "mode", "poll_interval")
"""What every kind of run takes (chat and embeddings)."""
CHAT_OPTIONS = RUN_OPTIONS + ("system", "temperature", "max_tokens", "schema", "schema_retries",
                              "progress", "usage", "pilot")
"""``apply``, ``aapply``, ``submit`` and ``estimate`` (besides ``model=`` and ``output=``)."""
EMBED_OPTIONS = RUN_OPTIONS + ("dimensions", "encoding_format")
"""``embed`` and ``aembed`` (besides ``model=``, ``output=``, ``as_array=``, ``progress=``)."""
INTERNAL = frozenset({"value_field"})  # set by s.llm for the Series' one column


def check_names(options: dict[str, Any], known: Iterable[str], call: str) -> None:
    """An InputError for the first option ``call`` does not take, naming the one meant."""
    known = tuple(known)
    for name in options:
        if name in known or name in INTERNAL:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            hint = f"did you mean {close[0]}=?"
        elif name in CHAT_OPTIONS + EMBED_OPTIONS:
            hint = f"{name}= belongs to {'embed' if name in EMBED_OPTIONS else 'apply'}()"
        else:
            hint = f"the options are {', '.join(sorted(known))}"
        raise errors.InputError(f"{call}() got an unknown option {name}=: {hint}")


def check_chat(output: Any, pilot: Any, options: dict[str, Any]) -> None:
    """The values of apply's options that the run itself does not check."""
    if not isinstance(output, str) or not output:
        raise errors.InputError("output= must be a non-empty column name")
    check_limits(options.get("concurrency", 64), options.get("max_retries", 6),
                 options.get("timeout", 120.0), options.get("missing", "skip"),
                 options.get("budget"))
    temperature, max_tokens = options.get("temperature"), options.get("max_tokens")
    if temperature is not None and (isinstance(temperature, bool)
                                    or not isinstance(temperature, (int, float))):
        raise errors.InputError(f"temperature= must be a number, not {temperature!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise errors.InputError(f"max_tokens= must be a positive integer, not {max_tokens!r}")
    if pilot is not None and (isinstance(pilot, bool) or not isinstance(pilot, int) or pilot < 1):
        raise errors.InputError(f"pilot= must be a positive number of rows, not {pilot!r}")


def check_new_columns(columns: Iterable[Any], new: Iterable[str], output: str) -> None:
    """The result is the frame plus new columns: refuse a name the frame already has rather
    than overwrite its data (an input column, or an earlier run's answers)."""
    have = set(map(str, columns))
    taken = [name for name in new if name in have]
    if taken:
        raise errors.InputError(
            f"output={output!r} would overwrite the frame's column(s) {taken}: pass another "
            f"output= name, or drop them first (df.drop(columns={taken}))")


def check_budget_fits_one(spec: RunSpec, estimate: Estimate) -> None:
    """The ledger sends a request only when its worst case (prompt plus ``max_tokens``) fits
    the budget. A budget too small for a typical request's worst case is refused before
    anything is sent, naming a ``max_tokens=`` that would fit, rather than ending in a frame
    of "not sent" rows. (Batch mode reserves every request at once and says so itself.)"""
    budget, to_send = spec.budget, estimate.requests
    if budget is None or spec.price is None or spec.batch or not to_send or not spec.max_tokens:
        return
    typical = Request(index=0, messages=[], est_input_tokens=math.ceil(estimate.input_tokens / to_send),
                      max_output_tokens=spec.max_tokens)
    worst = spec.worst_cost(typical)
    if worst <= budget:
        return
    per_output = spec.cost(Usage(0, 1_000_000)) / 1_000_000
    fits = math.floor((budget - (worst - spec.max_tokens * per_output)) / per_output) if per_output else 0
    advice = (f"pass max_tokens={fits:,} or less, or raise budget=" if fits >= 1
              else "raise budget=")
    raise errors.BudgetError(
        f"not started: budget={money(budget)} cannot cover one request's worst case: up to "
        f"{money(worst)} (its prompt plus max_tokens={spec.max_tokens:,} output tokens), and a "
        f"request is sent only when its worst case fits the budget. To run: {advice}.")
