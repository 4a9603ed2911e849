"""The JSON bodies the simulator sends, shaped exactly like the providers' own."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web

from .answers import Answer

SERVER_ERRORS = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
"""Anthropic's 529, which OpenAI-compatible gateways pass through unchanged."""
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})
MALFORMED = b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [{"index": 0, "mes'
"""A 200 body cut mid-stream, as a broken proxy would deliver it."""
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)


def error_body(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


FLEX_UNAVAILABLE = (
    "Resource Unavailable: flex processing does not have capacity for this request right now "
    "(simulated). You have not been charged. Retry later, or set service_tier to 'auto' for "
    "standard processing."
)


def flex_unavailable(headers: dict[str, str]) -> web.Response:
    """The 429 OpenAI answers a flex request it has no capacity for. Its guide ("Flex
    processing", section "Resource unavailable errors") names only the status and "429
    Resource Unavailable", not charged; clients in the wild match ``error.code ==
    "resource_unavailable"``, so that is the code (and the type); no retry-after, as the
    guide asks for exponential backoff."""
    body = error_body(FLEX_UNAVAILABLE, "resource_unavailable", None, "resource_unavailable")
    return web.json_response(body, status=429, headers=headers)


def bad_key_body(key: str | None) -> dict[str, Any]:
    """The 401 body, with the key masked the way OpenAI masks it."""
    if not key:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        message = (
            f"Incorrect API key provided: {mask_key(key)}. You can find your API key at "
            "https://platform.openai.com/account/api-keys."
        )
    return error_body(message, code="invalid_api_key")


def mask_key(key: str) -> str:
    """Keep only the first 5 and last 2 characters of a key: "sk-ab***yz"."""
    return f"{key[:5]}***{key[-2:]}" if len(key) >= 10 else "***"


def mask_header(name: str, value: str) -> str:
    """A credential header with its secret masked but its scheme kept: "Bearer sk-ab***yz"."""
    if name not in _SECRET_HEADERS:
        return value
    scheme, sep, token = value.partition(" ")
    if sep and scheme.lower() in ("bearer", "basic"):
        return f"{scheme} {mask_key(token.strip())}"
    return mask_key(value.strip())


def completion_body(model: str, answer: Answer, prompt_tokens: int, cached: int = 0,
                    service_tier: str | None = None) -> dict[str, Any]:
    """A non-streaming chat.completion object with its usage block (``cached`` of the prompt
    tokens read from the prompt cache; DeepSeek's hit/miss fields for ``deepseek*`` models),
    and ``service_tier`` when the request asked for one."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:29]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": prompt_tokens + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        },
        "system_fingerprint": "sim",
    }
    if model.startswith("deepseek"):
        body["usage"] |= {"prompt_cache_hit_tokens": cached,
                          "prompt_cache_miss_tokens": prompt_tokens - cached}
    if service_tier is not None:
        body["service_tier"] = service_tier
    return body


def models_body(models: tuple[str, ...]) -> dict[str, Any]:
    """``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "llmbatch-sim"}
            for m in models
        ],
    }
