"""The plain values that flow between layers: what to ask, and what came back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Request:
    """One call to send. ``index`` is the caller's handle (the first row that needs it)."""

    index: int
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    est_input_tokens: int = 0
    max_output_tokens: int = 0


@dataclass(slots=True)
class Usage:
    """Tokens normalised across providers: ``input_tokens`` counts every prompt token,
    ``cached_tokens`` is the part of it read from the provider's prompt cache and
    ``cache_write_tokens`` the part written to it (Anthropic bills writes; of them,
    ``cache_write_1h_tokens`` went to a one-hour entry, billed dearer)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost: float | None = None
    """Dollars the provider reported for this answer (LiteLLM's ``x-litellm-response-cost``);
    when present it is the cost, whatever the price list says."""
    cache_write_1h_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            None if self.cost is None or other.cost is None else self.cost + other.cost,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
        )


@dataclass(slots=True)
class Reply:
    """A successful answer, parsed by a provider."""

    text: str | None
    usage: Usage
    finish_reason: str | None = None
    model: str | None = None
    raw: dict[str, Any] | None = None
    vectors: list | None = None  # embeddings: one float32 array per input, in input order
    limit: int | None = None  # the max_tokens it was asked with (a cached answer's, if known)

    @property
    def truncated(self) -> bool:
        """Cut at the output limit (OpenAI ``finish_reason: "length"``, Anthropic
        ``stop_reason: "max_tokens"``; both providers normalise it to "length")."""
        return self.finish_reason == "length"


@dataclass(slots=True)
class RateLimitInfo:
    """What the provider's headers said about its limits; None where a header was absent."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None


BATCH_COUNTS = ("total", "processing", "succeeded", "errored", "expired", "canceled")
"""The request counts of a batch job, in one vocabulary for every provider."""


@dataclass(slots=True)
class BatchInfo:
    """A provider's batch job as its API last described it, normalised.

    ``status`` is the provider's own word (OpenAI: validating ... completed / expired; Anthropic:
    in_progress / canceling / ended). ``ended`` means nothing more will be processed and
    ``result_urls`` (if any) can be downloaded. ``counts`` uses :data:`BATCH_COUNTS`.
    """

    id: str
    status: str
    ended: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    result_urls: list[str] = field(default_factory=list)
    error: str | None = None  # why the whole job failed, when it did
