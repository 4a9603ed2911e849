"""Anthropic's Messages API (``POST /v1/messages``) as the simulator speaks it.

The wire format follows the official ``anthropic`` SDK (2.14): the key arrives as
``authorization: Bearer`` (or the long-documented ``x-api-key``), ``anthropic-version`` is
required, the system prompt is a top-level field, errors come as
``{"type": "error", "error": {"type", "message"}}`` and rate limits as
``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` with RFC 3339 resets.
Body checks use the API's "field: problem" wording and refuse fields the API does not know,
so a client that sends OpenAI-only fields finds out here rather than live.

Structured output comes two ways, both answered with JSON that fits the schema:
``output_config: {"format": {"type": "json_schema", "schema": {...}}}`` (what the SDK's
``messages.parse(output_format=Model)`` sends) puts it in the text block; a forced tool
(``tools: [{"name", "input_schema", ...}]`` with ``tool_choice: {"type": "tool", "name"}``, or
``{"type": "any"}``) answers with one ``tool_use`` block and ``stop_reason: "tool_use"``.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .answers import Answer
from .dialect import Dialect
from .limits import RateLimiter, Refusal
from .prompt_cache import NO_CACHE, CacheUse, check_cache_control
from .reply import Draft
from .responses import SERVER_ERRORS
from .tokens import content_text
from .validate import is_object, schema_nodes

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
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_TOOL_CHOICES = ("auto", "any", "tool", "none")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
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
    return (_check_output_config(body.get("output_config"))
            or _check_tools(body.get("tools"), body.get("tool_choice"))
            or check_cache_control(body))


def _check_output_config(config: Any) -> str | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        return "output_config: Input should be a valid dictionary"
    extra = sorted(set(config) - {"effort", "format"})
    if extra:
        return f"output_config.{extra[0]}: Extra inputs are not permitted"
    if config.get("effort") is not None and config["effort"] not in _EFFORTS:
        return "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'"
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        return "output_config.format: Input should be a valid dictionary"
    if fmt.get("type") != "json_schema":
        return "output_config.format.type: Input should be 'json_schema'"
    extra = sorted(set(fmt) - {"type", "schema"})
    if extra:
        return f"output_config.format.{extra[0]}: Extra inputs are not permitted"
    if "schema" not in fmt:
        return "output_config.format.schema: Field required"
    if not isinstance(fmt["schema"], dict):
        return "output_config.format.schema: Input should be a valid dictionary"
    for _, node in schema_nodes(fmt["schema"]):
        if is_object(node) and node.get("additionalProperties") is not False:
            return (
                "output_config.format.schema: For 'object' type, 'additionalProperties' must be "
                "explicitly set to false"
            )
    return None


def _check_tools(tools: Any, choice: Any) -> str | None:
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            if problem := _check_tool(i, tool):
                return problem
            names.append(tool["name"])
        if len(set(names)) < len(names):
            return "tools: Tool names must be unique."
    if choice is None:
        return None
    if not isinstance(choice, dict):
        return "tool_choice: Input should be a valid dictionary"
    kind = choice.get("type")
    if kind not in _TOOL_CHOICES:
        return (
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    if kind in ("any", "tool") and not names:
        return "tool_choice: tool_choice may only be specified while providing tools."
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            return "tool_choice.tool.name: Field required"
        if name not in names:
            return f"tool_choice.tool.name: Tool '{name}' not found in tools"
    return None


def _check_tool(i: int, tool: Any) -> str | None:
    if not isinstance(tool, dict):
        return f"tools.{i}: Input should be a valid dictionary"
    if tool.get("type") not in (None, "custom"):  # server tools (web search, ...) pass as-is
        return None if isinstance(tool.get("name"), str) else f"tools.{i}.name: Field required"
    where = f"tools.{i}.custom"
    name = tool.get("name")
    if not isinstance(name, str):
        return f"{where}.name: Field required"
    if not _TOOL_NAME.match(name):
        return f"{where}.name: String should match pattern '{_TOOL_NAME.pattern}'"
    schema = tool.get("input_schema")
    if schema is None:
        return f"{where}.input_schema: Field required"
    if not isinstance(schema, dict):
        return f"{where}.input_schema: Input should be a valid dictionary"
    if schema.get("type") != "object":
        return f"{where}.input_schema.type: Input should be 'object'"
    return None


def structured_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """What the answer must be, as ``make_answer`` takes it: a forced tool's call
    (``{"type": "tool", "name", "schema"}``), JSON for ``output_config.format``, or None.

    ``tool_choice: {"type": "any"}`` is answered with the first custom tool, deterministically.
    """
    choice = body.get("tool_choice") or {}
    custom = [t for t in body.get("tools") or [] if "input_schema" in t]
    wanted = choice.get("name") if choice.get("type") == "tool" else None
    if choice.get("type") in ("tool", "any") and custom:
        tool = next((t for t in custom if t["name"] == wanted), custom[0])
        return {"type": "tool", "name": tool["name"], "schema": tool["input_schema"]}
    fmt = (body.get("output_config") or {}).get("format")
    if fmt:
        return {"type": "json_schema", "json_schema": {"schema": fmt["schema"]}}
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


def message_body(model: str, answer: Answer, prompt_tokens: int,
                 cache: CacheUse = NO_CACHE) -> dict[str, Any]:
    """A non-streaming Message with its usage block: ``input_tokens`` is what the prompt cache
    neither read nor wrote (``prompt_cache.py``).

    A forced tool call is one ``tool_use`` block; cut short by max_tokens, its input is {}."""
    content: list[dict[str, Any]] = [{"type": "text", "text": answer.text}] if answer.text else []
    stop = STOP_REASONS.get(answer.finish_reason, answer.finish_reason)
    if answer.tool is not None:
        try:
            tool_input = json.loads(answer.text)
        except ValueError:
            tool_input = {}
        content = [{"type": "tool_use", "id": f"toolu_sim{uuid.uuid4().hex[:24]}",
                    "name": answer.tool, "input": tool_input}]
        stop = "tool_use" if answer.finish_reason == "stop" else stop
    return {
        "id": f"msg_sim{uuid.uuid4().hex[:21]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens - cache.read - cache.write,
            "output_tokens": answer.completion_tokens,
            "cache_creation_input_tokens": cache.write,
            "cache_read_input_tokens": cache.read,
            "cache_creation": {"ephemeral_5m_input_tokens": cache.write_5m,
                               "ephemeral_1h_input_tokens": cache.write_1h},
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

    api = "anthropic"
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

    def response_format(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return structured_format(body)

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

    def answer(self, draft: Draft) -> dict[str, Any]:
        return message_body(draft.model, draft.answer, draft.prompt_tokens, draft.cache)
