"""What differs between the APIs the simulator speaks: auth, body checks, answer and error bodies.

The server runs one pipeline for every completion endpoint (auth, checks, quota, faults,
rate limits, latency, answer) and asks a ``Dialect`` for everything that is wire format.
``ChatCompletions`` serves OpenAI's ``POST /v1/chat/completions``; ``anthropic.Messages``
serves Anthropic's ``POST /v1/messages``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .limits import RateLimiter, Refusal
from .reply import Draft
from .responses import (
    MALFORMED,
    OVERLOADED,
    QUOTA_MESSAGE,
    SERVER_ERRORS,
    bad_key_body,
    completion_body,
    error_body,
)
from .validate import check_chat

NOT_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


class Dialect(ABC):
    """One API's wire format. Each method returns the response to send, or None to go on."""

    api: str = "openai"
    """Whose rules answer it: "openai" (automatic prompt caching) or "anthropic"."""

    @abstractmethod
    def denied(self, headers: Mapping[str, str], expected: str | None) -> web.Response | None:
        """A 401 unless the request carries ``expected`` (None accepts anything)."""

    def bad_headers(self, headers: Mapping[str, str]) -> web.Response | None:
        """A 400 for a missing required header; most APIs need none."""
        return None

    @abstractmethod
    def not_json(self) -> web.Response:
        """A 400 for a body that is not JSON."""

    @abstractmethod
    def invalid(self, body: Any) -> web.Response | None:
        """A 400 for the first problem in the body, or None if the body is acceptable."""

    def messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The conversation in chat format (system first), for answers and token counts."""
        return list(body["messages"])

    @abstractmethod
    def max_tokens(self, body: dict[str, Any]) -> int | None:
        """The cap on the answer's tokens, or None for no cap."""

    def response_format(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return None

    @abstractmethod
    def error(
        self, status: int, message: str, type_: str = "invalid_request_error", **extra: Any
    ) -> web.Response:
        """An error in this API's envelope."""

    @abstractmethod
    def out_of_quota(self) -> web.Response:
        """What the API answers an account whose quota or credit is used up."""

    @abstractmethod
    def limit_headers(self, limiter: RateLimiter, now: float) -> dict[str, str]:
        """The rate-limit headers sent with every answer."""

    def retry_headers(self, seconds: float) -> dict[str, str]:
        """``retry-after`` in whole seconds, rounded up; nothing for a wait that never ends."""
        return {} if math.isinf(seconds) else {"retry-after": str(max(1, math.ceil(seconds)))}

    @abstractmethod
    def rate_limited(self, refusal: Refusal, headers: dict[str, str]) -> web.Response:
        """The 429 for a request the rate limiter refused."""

    @abstractmethod
    def fault_429(self, headers: dict[str, str]) -> web.Response:
        """An injected 429."""

    @abstractmethod
    def server_error(self, status: int, headers: dict[str, str]) -> web.Response:
        """An injected 500, 502 or 503."""

    def overloaded(self, headers: dict[str, str]) -> web.Response:
        """Anthropic's 529, which OpenAI-compatible gateways pass through unchanged."""
        return web.json_response(OVERLOADED, status=529, headers=headers)

    malformed: bytes = MALFORMED
    """A 200 body cut mid-stream, as a broken proxy would deliver it."""

    @abstractmethod
    def answer(self, draft: Draft) -> dict[str, Any]:
        """The body of a successful answer, usage (prompt cache included) too."""


class ChatCompletions(Dialect):
    """``POST /v1/chat/completions``, with OpenAI's error envelope and ``x-ratelimit-*``."""

    def denied(self, headers: Mapping[str, str], expected: str | None) -> web.Response | None:
        if expected is None:
            return None
        scheme, _, key = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key.strip() == expected:
            return None
        return web.json_response(bad_key_body(key.strip() or None), status=401)

    def not_json(self) -> web.Response:
        return self.error(400, NOT_JSON)

    def invalid(self, body: Any) -> web.Response | None:
        problem = check_chat(body)
        if problem is None:
            return None
        return self.error(400, problem.message, param=problem.param, code=problem.code)

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        value = body.get("max_completion_tokens") or body.get("max_tokens")
        return int(value) if value is not None else None

    def response_format(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return body.get("response_format")

    def error(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        return web.json_response(
            error_body(message, type_, param, code), status=status, headers=headers
        )

    def out_of_quota(self) -> web.Response:
        return self.error(429, QUOTA_MESSAGE, "insufficient_quota", code="insufficient_quota")

    def limit_headers(self, limiter: RateLimiter, now: float) -> dict[str, str]:
        return limiter.headers(now)

    def retry_headers(self, seconds: float) -> dict[str, str]:
        """``retry-after`` in whole seconds (rounded up) and ``retry-after-ms`` to the ms."""
        if math.isinf(seconds):
            return {}
        return super().retry_headers(seconds) | {
            "retry-after-ms": str(max(1, round(seconds * 1000)))
        }

    def rate_limited(self, refusal: Refusal, headers: dict[str, str]) -> web.Response:
        return self.error(
            429, refusal.message, refusal.kind, code="rate_limit_exceeded", headers=headers
        )

    def fault_429(self, headers: dict[str, str]) -> web.Response:
        message = "Rate limit reached for requests (simulated fault). Please try again later."
        return self.error(429, message, "requests", code="rate_limit_exceeded", headers=headers)

    def server_error(self, status: int, headers: dict[str, str]) -> web.Response:
        return self.error(status, SERVER_ERRORS[status], "server_error", headers=headers)

    def answer(self, draft: Draft) -> dict[str, Any]:
        return completion_body(draft.model, draft.answer, draft.prompt_tokens, draft.cache.read,
                               draft.service_tier)
