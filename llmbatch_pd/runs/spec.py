"""What a run sends and how, checked before anything is sent: the options every kind of run
shares (``check_limits``, ``check_mode``, ``SendSpec``) and the chat run's ``RunSpec``, with
what it derives from them (parameters, system prompt, prices and the worst case a request may
cost). The embeddings run's spec is in ``embed_spec.py``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import defaults, errors
from ..core.prompts import MISSING_POLICIES, Template
from ..core.types import Reply, Request, Usage
from ..planning import estimate as plan
from ..planning import pricing
from ..planning.pricing import Price, cost
from ..planning.tokens import TokenCounter, counter_for
from ..planning.worst import price_at, tiers_for
from ..providers.base import Provider
from ..providers.registry import ModelRef

if TYPE_CHECKING:  # pydantic loads only with schema=
    from ..core.schema import OutputSchema

MODES = ("realtime", "batch")


def check_mode(mode: Any, poll_interval: Any) -> None:
    """``mode=`` and, for batch jobs, how often to ask about them."""
    if mode not in MODES:
        raise errors.InputError(f"mode= must be one of {MODES}, not {mode!r}")
    if (isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float))
            or not poll_interval > 0):
        raise errors.InputError(f"poll_interval= must be a positive number of seconds, not {poll_interval!r}")


def check_limits(concurrency: Any, max_retries: Any, timeout: Any, missing: Any, budget: Any) -> None:
    """The options every kind of run shares, refused with a clear message before anything is sent."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise errors.InputError(f"concurrency= must be a positive integer, not {concurrency!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise errors.InputError(f"max_retries= must be 0 or more, not {max_retries!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise errors.InputError(f"timeout= must be a positive number of seconds, not {timeout!r}")
    if missing not in MISSING_POLICIES:
        raise errors.InputError(f"missing= must be one of {MISSING_POLICIES}, not {missing!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0):
        raise errors.InputError(f"budget= must be a number of dollars, not {budget!r}")


@dataclass
class SendSpec:
    """What every kind of run's spec holds: the template, the model and its provider, how
    requests are sent, the budget and price, the cache file and the mode."""

    template: Template
    model: ModelRef
    provider: Provider
    concurrency: int = defaults.CONCURRENCY
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = defaults.MAX_RETRIES
    timeout: float = defaults.TIMEOUT
    missing: str = defaults.MISSING
    budget: float | None = None
    price: Price | None = None
    cache_path: Path | None = None
    mode: str = "realtime"  # or "batch": the provider's batch API, half price, within 24 h
    poll_interval: float = defaults.POLL_INTERVAL  # seconds between batch status checks (backing off)

    @property
    def batch(self) -> bool:
        return self.mode == "batch"

    @property
    def counter(self) -> TokenCounter:
        return counter_for(self.model.full)

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs in this run's mode."""
        raise NotImplementedError

    def worst_cost(self, request: Request) -> float:
        """An upper bound on what one request can cost, reserved before it is sent."""
        raise NotImplementedError


@dataclass
class RunSpec(SendSpec):
    """Everything that decides what a chat run sends and how; validated before anything is
    sent (``SendSpec``'s fields, then the chat run's own)."""

    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    context_window: int | None = None
    prefill: dict[str, Reply] = field(default_factory=dict)  # answers a pilot already paid for
    extra: dict[str, Any] = field(default_factory=dict)  # params=: sent as is, in the cache key
    refresh: bool = False  # cache="refresh": ask again, overwrite what the cache holds
    max_tokens_from_budget: bool = False  # max_tokens set by budget= as a bound, not by the user
    schema: OutputSchema | None = None  # schema=: answers as validated fields
    schema_retries: int = defaults.SCHEMA_RETRIES  # schema=: times an answer that does not fit is asked again
    repeats: Any = field(default=None, repr=False, compare=False)  # Run._prompt_repeats' memo
    pack: int | str | None = None  # pack=: rows per request, "auto", or None (one row each)
    pack_output: float | None = None  # pack="auto": output tokens per row a pilot measured

    @property
    def params(self) -> dict[str, Any]:
        structured = self.provider.structured(self.schema) if self.schema is not None else {}
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, **structured,
                **self.extra}

    @property
    def system_prompt(self) -> str | None:
        """``system=``, plus the schema for providers that take it only in the prompt."""
        if self.schema is None or not self.provider.schema_in_prompt:
            return self.system
        return f"{self.system}\n\n{self.schema.instruction()}" if self.system else self.schema.instruction()

    def schema_tokens(self) -> int:
        """What the schema adds to every prompt (the providers bill it as input), and the
        prompt the provider wraps it in (``Provider.hidden_prompt``)."""
        if self.schema is None:
            return 0
        documented, wrapped = self.provider.hidden_prompt(self.schema)
        hidden = documented + (self.counter.count(wrapped) if wrapped else 0)
        if self.provider.schema_in_prompt:  # in our system prompt: counted with the messages
            return hidden
        return hidden + self.counter.count(json.dumps(self.schema.json_schema, separators=(",", ":")))

    @property
    def tiers(self) -> tuple[tuple[int, Price], ...]:
        """The catalogue's dearer tiers for long prompts (none for prices= overrides)."""
        if self.price is None or self.price.source != "genai-prices":
            return ()
        return tiers_for(self.model.provider, self.model.model)

    def cost(self, usage: Usage) -> float:
        """What ``usage`` cost: the provider's reported cost, else priced in the tier its prompt
        falls into (0.0 without a price: ``RunReport.priced`` then says the cost is unknown)."""
        price = self.price
        if price is not None:
            price = price_at(price, self.tiers, usage.input_tokens)
        return cost(usage, price, batch=self.batch)

    def worst_cost(self, request: Request) -> float:
        """An upper bound on what one request can cost, reserved before it is sent: its
        prompt (hidden tokens included, see ``Run._requests``) at the top of our counting
        error, ``max_tokens`` of answer, both at the tier that many prompt tokens fall into."""
        if self.price is None:
            return 0.0
        margin = plan.INPUT_RANGE_EXACT[1] if self.counter.exact else plan.INPUT_RANGE_ESTIMATED[1] * 1.2
        worst = Usage(math.ceil(request.est_input_tokens * margin) + 16,
                      request.max_output_tokens or plan.DEFAULT_MAX_OUTPUT)
        return self.cost(worst)

def checked_price(provider: str, model: str, full: str, overrides: Mapping[str, Any] | None,
                  budget: float | None, *, example: str) -> Price | None:
    """``planning.pricing.price_for``, refused before anything is sent: a malformed ``prices=`` entry, or no
    price for a run under ``budget=`` (``example``: the tuple to suggest for ``prices=``)."""
    try:
        price = pricing.price_for(provider, model, overrides)
    except ValueError as exc:
        raise errors.InputError(str(exc)) from None
    if budget is not None and price is None:
        raise errors.InputError(f"no price is known for {full}, so it cannot run under budget=: pass "
                         f"prices={{{full!r}: {example}}}")
    return price
