"""What an embeddings run sends and how: ``EmbedSpec``, the API's limits on a request, and
``build_spec``, which checks the options and resolves the model to an embeddings provider
before anything is sent (an Anthropic model, or a provider without a batch API in batch mode,
is refused here)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..core import defaults, errors
from ..core.prompts import Template
from ..core.types import Request, Usage
from ..planning import estimate as plan
from ..planning.pricing import cost
from ..providers.embeddings import OpenAIEmbeddings
from ..providers.registry import make_embeddings_provider, parse_model
from .spec import SendSpec, check_limits, check_mode, checked_price

MAX_INPUTS = 2048
"""OpenAI: at most 2048 inputs in one embeddings request."""
MAX_REQUEST_TOKENS = 300_000
"""OpenAI: at most 300,000 tokens summed over all inputs of one request."""
MAX_INPUT_TOKENS = 8192
"""OpenAI: at most 8192 tokens in any one input."""
CONCURRENCY = defaults.EMBED_CONCURRENCY


@dataclass
class EmbedSpec(SendSpec):
    """Everything that decides what an embeddings run sends; validated before anything is
    sent (``SendSpec``'s fields, an embeddings provider, then the run's own). ``mode="batch"``
    is OpenAI's Batch API."""

    provider: OpenAIEmbeddings
    concurrency: int = CONCURRENCY
    dimensions: int | None = None
    max_inputs: int = MAX_INPUTS
    max_request_tokens: int = MAX_REQUEST_TOKENS
    max_input_tokens: int = MAX_INPUT_TOKENS

    @property
    def margin(self) -> tuple[float, float]:
        """How far off our counts may be (low, high), as the chat plan assumes."""
        return plan.INPUT_RANGE_EXACT if self.counter.exact else plan.INPUT_RANGE_ESTIMATED

    def cost(self, usage: Usage) -> float:
        """What ``usage`` costs in this run's mode (batch jobs at half price)."""
        return cost(usage, self.price, batch=self.batch) if self.price is not None else 0.0

    def worst_cost(self, request: Request) -> float:
        """An upper bound on one pack's cost (no output tokens), reserved before it is sent."""
        if self.price is None:
            return 0.0
        return self.cost(Usage(math.ceil(request.est_input_tokens * self.margin[1] * 1.2) + 16))


def build_spec(template: str, columns: list[Any], *, model: str, value_field: str | None = None,
               dimensions: int | None = None, base_url: str | None = None,
               api_key: str | None = None, concurrency: int = CONCURRENCY, rpm: float | None = None,
               tpm: float | None = None, max_retries: int = defaults.MAX_RETRIES,
               timeout: float = defaults.TIMEOUT, missing: str = defaults.MISSING,
               budget: float | None = None, cache: Any = True, prices: dict | None = None,
               encoding_format: str = "base64", mode: str = "realtime",
               poll_interval: float = defaults.POLL_INTERVAL) -> EmbedSpec:
    """Validate the options and resolve the model to an embeddings provider; sends nothing."""
    from ..store import db as store

    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int)
                                   or dimensions < 1):
        raise errors.InputError(f"dimensions= must be a positive integer, not {dimensions!r}")
    check_limits(concurrency, max_retries, timeout, missing, budget)
    check_mode(mode, poll_interval)
    parsed = Template.parse(template, value_field=value_field)
    parsed.check_columns(columns)
    ref = parse_model(model, base_url=base_url)
    provider = make_embeddings_provider(ref, base_url=base_url, api_key=api_key,
                                        encoding_format=encoding_format)
    if mode == "batch" and not provider.supports_batch:  # DeepSeek, Gemini: refused before any send
        raise errors.InputError(
            f"mode='batch': {ref.full} has no batch API here (embeddings batch jobs work with "
            "openai/ models); use mode='realtime'")
    price = checked_price(ref.provider, ref.model, ref.full, prices, budget,
                          example="(input_per_million, 0)")
    return EmbedSpec(template=parsed, model=ref, provider=provider, dimensions=dimensions,
                     concurrency=concurrency, rpm=rpm, tpm=tpm, max_retries=max_retries,
                     timeout=timeout, missing=missing, budget=budget, price=price,
                     cache_path=store.resolve(cache), mode=mode, poll_interval=float(poll_interval))
