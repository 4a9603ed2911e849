"""OpenAI chat completions, and every API that speaks it (DeepSeek, Gemini's OpenAI
endpoint, gateways, vLLM, Ollama, the simulator)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from .. import errors
from ..types import RateLimitInfo, Reply, Request, Usage
from .base import Provider, classify_http_error, parse_duration, parse_int


class OpenAIChat(Provider):
    name = "openai"
    key_env = "OPENAI_API_KEY"
    # OpenAI's own reasoning models refuse max_tokens; compatible servers mostly want it.
    max_tokens_field = "max_tokens"

    def __init__(self, model, base_url, api_key, *, max_tokens_field: str | None = None) -> None:
        super().__init__(model, base_url, api_key)
        if max_tokens_field:
            self.max_tokens_field = max_tokens_field
        self._url = f"{self.base_url}/chat/completions"
        self._headers = {"content-type": "application/json"}
        if api_key is not None:
            self._headers["authorization"] = f"Bearer {api_key.reveal()}"

    def prepare(self, request: Request) -> tuple[str, dict[str, str], bytes]:
        body: dict = {"model": self.model, "messages": request.messages}
        for name, value in request.params.items():
            if value is None:
                continue
            body[self.max_tokens_field if name == "max_tokens" else name] = value
        return self._url, self._headers, json.dumps(body, ensure_ascii=False).encode()

    def parse(self, status: int, headers: Mapping[str, str], body: bytes) -> Reply:
        if status >= 400:
            raise self._error(status, headers, body)
        data = self._load_json(body)
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content")
            if text is None and message.get("refusal"):
                raise errors.BadRequestError(f"the model refused: {message['refusal']}")
            u = data.get("usage") or {}
            details = u.get("prompt_tokens_details") or {}
            usage = Usage(
                input_tokens=int(u.get("prompt_tokens") or 0),
                output_tokens=int(u.get("completion_tokens") or 0),
                cached_tokens=int(details.get("cached_tokens") or 0),
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise errors.MalformedResponse(f"unexpected response shape: {exc!r}") from None
        return Reply(text, usage, choice.get("finish_reason"), data.get("model"))

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        if "x-ratelimit-limit-requests" not in headers and "x-ratelimit-limit-tokens" not in headers:
            return None
        return RateLimitInfo(
            limit_requests=parse_int(headers.get("x-ratelimit-limit-requests")),
            remaining_requests=parse_int(headers.get("x-ratelimit-remaining-requests")),
            reset_requests=parse_duration(headers.get("x-ratelimit-reset-requests")),
            limit_tokens=parse_int(headers.get("x-ratelimit-limit-tokens")),
            remaining_tokens=parse_int(headers.get("x-ratelimit-remaining-tokens")),
            reset_tokens=parse_duration(headers.get("x-ratelimit-reset-tokens")),
        )

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        message, code = f"HTTP {status}", None
        try:
            data = json.loads(body)
            err = data.get("error", data) if isinstance(data, dict) else {}
            if isinstance(err, dict):
                message = str(err.get("message") or message)
                code = err.get("code") or err.get("type")
            elif isinstance(err, str):
                message = err
        except (ValueError, UnicodeDecodeError):
            text = body[:200].decode("utf-8", "replace").strip()
            if text:
                message = text
        exc = classify_http_error(status, self._scrub(message), str(code or ""), headers)
        if isinstance(exc, errors.AuthenticationError):
            exc.message += f" (check {self._key_hint()})"
        return exc
