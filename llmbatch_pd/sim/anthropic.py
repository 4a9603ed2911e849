"""Anthropic's Messages API (``POST /v1/messages``) as the simulator speaks it.

The wire format follows the official ``anthropic`` SDK (2.14): the key arrives as
``authorization: Bearer`` (or the long-documented ``x-api-key``), ``anthropic-version`` is
required, the system prompt is a top-level field, errors come as
``{"type": "error", "error": {"type", "message"}}`` and rate limits as
``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` with RFC 3339 resets.
Body checks use the API's "field: problem" wording and refuse fields the API does not know,
so a client that sends OpenAI-only fields finds out here rather than live.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .answers import Answer
from .dialect import Dialect
from .limits import RateLimiter, Refusal
from .responses import SERVER_ERRORS
from .tokens import content_text

FIELDS = frozenset(
    # What anthropic 2.14's messages.create sends (resources/messages/messages.py) ...
    "model messages max_tokens system metadata stop_sequences stream tools tool_choice thinking "
    "service_tier container cache_control diagnostics inference_geo output_config speed "
    # ... and the sampling knobs older API versions documented (2.14 no longer lists them).
    "temperature top_p top_k".split()
)
_ROLES = ("user", "assistant")
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
CREDIT_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits."
)
"""What the API answers, as a 400, to an account out of credit."""
MALFORMED = b'{"id": "msg_sim", "type": "message", "role": "assistant", "content": [{"type": "te'


def error_body(type_: str, message: str) -> dict[str, Any]:
    """Anthropic's error envelope."""
    return {"type": "error", "error": {"type": type_, "message": message}}


def check_messages(body: Any) -> str | None:
    """The first problem with a Messages body, in the API's wording, or None."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary"
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    extra = sorted(set(body) - FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    if not isinstance(body["model"], str) or not body["model"]:
        return "model: Input should be a valid string"
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 0:  # 0 is allowed: it pre-warms the prompt cache without an answer
        return "max_tokens: Input should be greater than or equal to 0"
    messages = body["messages"]
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if problem := _check_message(i, message):
            return problem
    if "system" in body and (problem := _check_system(body["system"])):
        return problem
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            return "temperature: Input should be a valid number"
        if not 0 <= temperature <= 1:
            return "temperature: Input should be less than or equal to 1"
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        return "stop_sequences: Input should be a valid list of strings"
    return None


def _check_message(i: int, message: Any) -> str | None:
    where = f"messages.{i}"
    if not isinstance(message, dict):
        return f"{where}: Input should be a valid dictionary"
    role = message.get("role")
    if role == "system":
        return (
            'messages: Unexpected role "system". The Messages API accepts a top-level `system` '
            'parameter, not "system" as an input message role.'
        )
    if role not in _ROLES:
        return f"{where}.role: Input should be 'user' or 'assistant'"
    extra = sorted(set(message) - {"role", "content"})
    if extra:
        return f"{where}.{extra[0]}: Extra inputs are not permitted"
    content = message.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}.content: Input should be a valid string or a list of content blocks"
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"{where}.content.{j}: Input should be a valid dictionary with a type"
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            return f"{where}.content.{j}.text: Field required"
    return None


def _check_system(system: Any) -> str | None:
    if isinstance(system, str):
        return None
    if isinstance(system, list) and all(
        isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        for b in system
    ):
        return None
    return "system: Input should be a valid string or a list of text blocks"


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation in chat format, the system prompt first: the same conversation asked
    through either API gets the same answer and the same token count."""
    messages = [{"role": m["role"], "content": m["content"]} for m in body["messages"]]
    system = body.get("system")
    if system:
        text = system if isinstance(system, str) else content_text(system)
        messages.insert(0, {"role": "system", "content": text})
    return messages


def message_body(model: str, answer: Answer, input_tokens: int) -> dict[str, Any]:
    """A non-streaming Message with its usage block (no prompt cache: both cache fields 0)."""
    return {
        "id": f"msg_sim{uuid.uuid4().hex[:21]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": answer.text}] if answer.text else [],
        "stop_reason": STOP_REASONS.get(answer.finish_reason, answer.finish_reason),
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": answer.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def rfc3339_after(seconds: float, now: float | None = None) -> str:
    """The UTC time ``seconds`` from now, RFC 3339, rounded up to the second as the API does
    (never earlier than the real reset). A reset that never comes is written as a day."""
    wall = (time.time() if now is None else now) + min(seconds, 86400.0)
    return datetime.fromtimestamp(math.ceil(wall), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ratelimit_headers(limiter: RateLimiter, now: float) -> dict[str, str]:
    """``anthropic-ratelimit-*`` for each limit in force; a limit that is None sends none."""
    out: dict[str, str] = {}
    for kind, bucket in (("requests", limiter.requests), ("tokens", limiter.tokens)):
        if bucket is not None:
            prefix = f"anthropic-ratelimit-{kind}"
            out[f"{prefix}-limit"] = str(bucket.limit)
            out[f"{prefix}-remaining"] = str(bucket.remaining(now))
            out[f"{prefix}-reset"] = rfc3339_after(bucket.reset_after(now))
    return out


class Messages(Dialect):
    """``POST /v1/messages``."""

    malformed = MALFORMED

    def denied(self, headers: Mapping[str, str], expected: str | None) -> web.Response | None:
        if expected is None:
            return None
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        key = headers.get("x-api-key") or (token.strip() if scheme.lower() == "bearer" else "")
        if key == expected:
            return None
        # Unlike OpenAI, Anthropic does not echo any part of a wrong key.
        message = "invalid x-api-key" if key else "x-api-key header is required"
        return self.error(401, message, "authentication_error")

    def bad_headers(self, headers: Mapping[str, str]) -> web.Response | None:
        if headers.get("anthropic-version"):
            return None
        return self.error(400, "anthropic-version: header is required")

    def not_json(self) -> web.Response:
        return self.error(
            400,
            "There was an error parsing the body of your request. "
            "Please make sure it is valid JSON.",
        )

    def invalid(self, body: Any) -> web.Response | None:
        problem = check_messages(body)
        return None if problem is None else self.error(400, problem)

    def messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return chat_messages(body)

    def max_tokens(self, body: dict[str, Any]) -> int | None:
        return int(body["max_tokens"])

    def error(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        *,
        headers: dict[str, str] | None = None,
        **ignored: Any,
    ) -> web.Response:
        return web.json_response(error_body(type_, message), status=status, headers=headers)

    def out_of_quota(self) -> web.Response:
        return self.error(400, CREDIT_MESSAGE)

    def limit_headers(self, limiter: RateLimiter, now: float) -> dict[str, str]:
        return ratelimit_headers(limiter, now)

    def rate_limited(self, refusal: Refusal, headers: dict[str, str]) -> web.Response:
        if math.isinf(refusal.retry_after):
            message = f"This request is larger than your organization's {refusal.kind} limit."
        else:
            message = (
                f"This request would exceed your organization's rate limit for {refusal.kind} "
                f"per minute. Please try again in {max(1, math.ceil(refusal.retry_after))}s."
            )
        return self.error(429, message, "rate_limit_error", headers=headers)

    def fault_429(self, headers: dict[str, str]) -> web.Response:
        message = "Number of requests has exceeded your rate limit (simulated fault)."
        return self.error(429, message, "rate_limit_error", headers=headers)

    def server_error(self, status: int, headers: dict[str, str]) -> web.Response:
        return self.error(status, SERVER_ERRORS[status], "api_error", headers=headers)

    def answer(self, model: str, answer: Answer, prompt_tokens: int) -> dict[str, Any]:
        return message_body(model, answer, prompt_tokens)
