"""What a chat run sends, built from a call's checked options and the frame's column names
(no pandas here): the provider from the registry, the price, the output bound a budget needs,
the schema. ``options.py`` reads this function's signature as the list of chat options."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..core import defaults, errors
from ..core.params import check_params
from ..core.prompts import Template
from ..planning import pricing
from ..planning.estimate import DEFAULT_MAX_OUTPUT
from ..providers.registry import batch_refusal, make_provider, parse_model
from ..store import db as store
from .spec import RunSpec, check_mode, checked_price


def chat_spec(columns: list[Any], template: str, *, model: str, system: str | None = None,
              temperature: float | None = None, max_tokens: int | None = None,
              base_url: str | None = None, api_key: str | None = None,
              concurrency: int = defaults.CONCURRENCY, rpm: float | None = None,
              tpm: float | None = None, max_retries: int = defaults.MAX_RETRIES,
              timeout: float = defaults.TIMEOUT, missing: str = defaults.MISSING,
              budget: float | None = None, cache: bool | str | None = True,
              prices: dict | None = None, value_field: str | None = None, mode: str = "realtime",
              poll_interval: float = defaults.POLL_INTERVAL, schema: Any = None,
              schema_retries: int = defaults.SCHEMA_RETRIES, params: dict | None = None,
              tier: str | None = None, need_key: bool = True) -> RunSpec:
    """Validate a chat call's options against the frame's ``columns`` and build the run's
    spec; nothing is sent. ``need_key=False`` (an estimate that sends nothing) accepts a
    missing API key."""
    check_mode(mode, poll_interval)
    parsed = Template.parse(template, value_field=value_field)
    parsed.check_columns(list(columns))
    check_unique(columns, parsed.fields)
    ref = parse_model(model, base_url=base_url)
    provider = make_provider(ref, base_url=base_url, api_key=api_key, need_key=need_key,
                             prefix=parsed.prefix, tier=tier)
    if mode == "batch" and not provider.supports_batch:
        raise errors.InputError(batch_refusal(ref))
    if tier == "flex" and mode == "batch":
        raise errors.InputError("tier='flex' is a real-time tier; mode='batch' has its own price")
    price = checked_price(ref.provider, ref.model, ref.full, prices, budget,
                          example="(input_per_million, output_per_million)")
    if tier == "flex":  # batch rates; slower answers: the flex guide's 15-minute timeout
        price = pricing.flex_price(price)
        timeout = defaults.FLEX_TIMEOUT if timeout == defaults.TIMEOUT else timeout
    extra = check_params(params)
    bound = budget is not None and max_tokens is None
    if bound:
        max_tokens = DEFAULT_MAX_OUTPUT  # a real bound for the worst case the budget reserves
    output_schema = None
    if schema is not None:
        from ..core.schema import OutputSchema  # pydantic loads only when schema= is used

        output_schema = OutputSchema.from_user(schema)
        provider.structured(output_schema)  # a provider without structured output says so now
    if isinstance(schema_retries, bool) or not isinstance(schema_retries, int) or schema_retries < 0:
        raise errors.InputError(f"schema_retries= must be 0 or more, not {schema_retries!r}")
    return RunSpec(template=parsed, model=ref, provider=provider, system=system,
                   temperature=temperature, max_tokens=max_tokens, concurrency=concurrency,
                   rpm=rpm, tpm=tpm, max_retries=max_retries, timeout=timeout, missing=missing,
                   budget=budget, price=price,
                   context_window=pricing.context_window(ref.provider, ref.model),
                   cache_path=store.resolve(cache), mode=mode, poll_interval=float(poll_interval),
                   schema=output_schema, schema_retries=schema_retries, extra=extra,
                   refresh=isinstance(cache, str) and cache == store.REFRESH,
                   max_tokens_from_budget=bound)


def check_unique(columns: Iterable[Any], fields: Iterable[str]) -> None:
    """A column the template reads must be there once (two of them: which one is meant?)."""
    names = list(map(str, columns))
    for name in fields:
        if names.count(name) > 1:
            raise errors.InputError(f"column {name!r} appears more than once; rename the duplicates first")
