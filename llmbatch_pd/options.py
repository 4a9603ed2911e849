"""The options ``df.llm.apply``/``submit``/``estimate``/``embed`` take, checked before anything
is sent: an unknown name (a typo) is refused naming the option meant, a bad value says what
is wanted, a result column that would overwrite one of the frame's is refused, and a budget
the estimate already exceeds is refused. The defaults are ``core.defaults``'; the specs are
built from the checked options by ``runs.chat_spec`` and ``runs.embed_spec``."""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

from .core import defaults, errors
from .core.numbers import money
from .core.types import Request, Usage
from .planning.estimate import Estimate
from .runs.packing import MAX_AUTO, ROW_OVERHEAD, pack_output_limit
from .runs.spec import RunSpec, check_limits

NOT_OPTIONS = frozenset({"self", "df", "template", "columns", "value_field", "need_key",
                         "check_budget", "label"})
"""Parameters the accessor passes itself (``value_field``: s.llm's one column)."""


def keywords(*functions: Callable[..., Any]) -> tuple[str, ...]:
    """The options the functions take by keyword: their signatures are the one list of
    options, so an option added to a run is known here at once."""
    names: list[str] = []
    for function in functions:
        for p in inspect.signature(function).parameters.values():
            if (p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in NOT_OPTIONS
                    and p.name not in names):
                names.append(p.name)
    return tuple(names)


def check_names(options: dict[str, Any], known: Iterable[str], call: str,
                elsewhere: dict[str, Iterable[str]] | None = None) -> None:
    """An InputError for the first option ``call`` does not take, naming the one meant (or
    the call in ``elsewhere`` that takes it: ``dimensions=`` is embed's)."""
    known = tuple(known)
    for name in options:
        if name in known or name == "value_field":
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        owner = next((other for other, names in (elsewhere or {}).items() if name in names), None)
        if close:
            hint = f"did you mean {close[0]}=?"
        elif owner:
            hint = f"{name}= belongs to {owner}()"
        else:
            hint = f"the options are {', '.join(sorted(known))}"
        raise errors.InputError(f"{call}() got an unknown option {name}=: {hint}")


def check_chat(output: Any, pilot: Any, options: dict[str, Any]) -> None:
    """The values of apply's options that the run itself does not check."""
    if not isinstance(output, str) or not output:
        raise errors.InputError("output= must be a non-empty column name")
    check_limits(options.get("concurrency", defaults.CONCURRENCY),
                 options.get("max_retries", defaults.MAX_RETRIES),
                 options.get("timeout", defaults.TIMEOUT), options.get("missing", defaults.MISSING),
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


def check_new_columns(columns: Iterable[Any], new: Iterable[str], output: str,
                      fields: Iterable[str] = ()) -> None:
    """The result is the frame plus new columns. A name the frame already has is refused
    (rather than overwrite its data) unless the frame holds ALL of them and none is read by the
    template: that is an earlier result of the same call, and re-running a notebook cell
    (``df = df.llm.apply(...)``) replaces those answers with the new ones."""
    have = set(map(str, columns))
    new = list(new)
    taken = [name for name in new if name in have]
    inputs = set(fields) & set(taken)
    if taken and (inputs or len(taken) < len(new)):
        raise errors.InputError(
            f"output={output!r} would overwrite the frame's column(s) {taken}"
            + (", which the template reads" if inputs else "")
            + f": pass another output= name, or drop them first (df.drop(columns={taken}))")


def check_budget_fits_one(spec: RunSpec, estimate: Estimate) -> None:
    """The ledger sends a request only when its worst case (prompt plus ``max_tokens``) fits
    the budget. A budget too small for a typical request's worst case is refused before
    anything is sent, naming a ``max_tokens=`` that would fit, rather than ending in a frame
    of "not sent" rows. (Batch mode reserves every request at once and says so itself.)"""
    budget, to_send = spec.budget, estimate.to_send
    if budget is None or spec.price is None or spec.batch or not to_send or not spec.max_tokens:
        return
    rows = pack_rows(spec, estimate)  # pack=: a request carries that many rows' answers
    output = pack_output_limit(spec.max_tokens, rows) if rows > 1 else spec.max_tokens
    typical = Request(index=0, messages=[], est_input_tokens=math.ceil(estimate.input_tokens / to_send),
                      max_output_tokens=output)
    worst = spec.worst_cost(typical)
    if worst <= budget:
        return
    per_token = spec.cost(Usage(0, 1_000_000)) / 1_000_000
    room = (budget - (worst - output * per_token)) / per_token if per_token else 0  # output tokens that fit
    fits = math.floor(room / rows) - (ROW_OVERHEAD if rows > 1 else 0)
    advice = (f"pass max_tokens={fits} or less, or raise budget=" if fits >= 1
              else "raise budget=")
    what = (f"max_tokens={spec.max_tokens:,} output tokens" if rows <= 1 else
            f"{output:,} output tokens: max_tokens={spec.max_tokens:,} for each of its {rows} rows")
    raise errors.BudgetError(
        f"not started: budget={money(budget)} cannot cover one request's worst case: up to "
        f"{money(worst)} (its prompt plus {what}), and a "
        f"request is sent only when its worst case fits the budget. To run: {advice}"
        + (", or a smaller pack=" if rows > 1 else "") + ".")


def pack_rows(spec: RunSpec, estimate: Estimate) -> int:
    """The rows in one request: 1 without ``pack=``; with it, the most a pack holds."""
    if spec.pack is None:
        return 1
    size = spec.pack if isinstance(spec.pack, int) else MAX_AUTO
    rows = estimate.rows - estimate.duplicates - estimate.cached - estimate.skipped - estimate.too_long
    return max(1, min(size, rows))


def check_embed_output(output: Any) -> None:
    if not isinstance(output, str) or not output:
        raise errors.InputError("output= must be a non-empty name")


def model_list(model: Any) -> list[str]:
    """``model=[...]``: the names, refused when empty, not names, or repeated."""
    names = list(model)
    if not names:
        raise errors.InputError("model= needs at least one model name")
    if not all(isinstance(n, str) for n in names):
        raise errors.InputError(f"model= must be a name or a list of names, not {model!r}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise errors.InputError(f"model= names {repeated} more than once")
    return names


def labels(names: list[str]) -> list[str]:
    """Column suffixes: the model's own name (gpt-4.1-mini), or provider_model where two
    providers serve the same name."""
    short = [n.strip().split("/", 1)[-1] for n in names]
    return [s if short.count(s) == 1 else n.strip().replace("/", "_") for s, n in zip(short, names, strict=True)]


def check_budget(spec: RunSpec, estimate: Estimate) -> None:
    """One model: refused before anything is sent when the expected cost is above the budget,
    or the budget cannot cover one request's worst case."""
    budget, expected = spec.budget, estimate.cost_for(spec.mode)
    if budget is not None and expected is not None and expected > budget:
        refusal = errors.BudgetError(
            f"not started: the expected cost is above the budget of {money(budget)}.\n"
            f"{estimate.summary()}\nRaise budget=, lower max_tokens=, or use fewer rows."
        )
        refusal.estimate, refusal.budget = estimate, budget  # the red card shows the estimate
        raise refusal
    check_budget_fits_one(spec, estimate)


def check_group_budget(budget: float | None, runs: list[tuple[RunSpec, Estimate]]) -> None:
    """``model=[...]``: one budget for all the models, refused before anything is sent when
    the expected costs add up to more."""
    if budget is None:
        return
    costs = [estimate.cost_for(spec.mode) for spec, estimate in runs]
    if all(c is not None for c in costs) and sum(costs) > budget:
        lines = "\n".join(f"  {spec.model.full}: {money(c)}" for (spec, _), c in zip(runs, costs, strict=True))
        raise errors.BudgetError(
            f"not started: the expected cost of {money(sum(costs))} for {len(costs)} models is above "
            f"the budget of {money(budget)}:\n{lines}\nRaise budget=, drop a model, or use fewer rows.")
    for spec, estimate in runs:
        check_budget_fits_one(spec, estimate)
