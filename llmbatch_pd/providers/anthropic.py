"""Anthropic's native Messages API: ``POST {base_url}/v1/messages``.

The wire format follows what the official ``anthropic`` SDK 2.14 sends (its source is the
reference, checked by tests/providers/test_anthropic.py against the simulator): the key as
``authorization: Bearer`` (``_client.py``, ``_api_key_auth``), the ``anthropic-version:
2026-10-21`` header (``_constants.py``), a root base URL with ``/v1`` in the path
(``resources/messages/messages.py``), and a required ``max_tokens``.

Our requests are chat-shaped (``[{role, content}]``), so ``system`` (and ``developer``)
messages move to the top-level ``system`` field. Usage is normalised to our meaning:
Anthropic's ``input_tokens`` leaves out cache reads and cache writes, ours counts them.

Message Batches (``mode="batch"``): ``POST /v1/messages/batches`` with ``requests:
[{custom_id, params}]`` (params: the same body as ``/v1/messages``), ``GET
/v1/messages/batches/{id}`` for ``processing_status`` (in_progress, canceling, ended) and
``request_counts``, then the JSONL at ``results_url``, one ``{custom_id, result}`` per request
with result type succeeded, errored, canceled or expired. At most 100,000 requests or 256 MB
per job. ``custom_id`` must match ``^[a-zA-Z0-9_-]{1,64}$``: our request keys are 32 hex
digits.

Prompt caching caches only what ``cache_control`` marks. The static part of the prompt comes
first (system, then the template's text before its first field, or a packed request's
instructions), so the user message is sent as two text blocks, the first marked
``{"type": "ephemeral"}`` (``"ttl": "1h"`` in batch lines: a job often outlasts five minutes),
when system + marked prefix reach the model's minimum (``Capabilities.cache_min_tokens``:
1,024, or 4,096 for Haiku 4.5 and Opus 4.5+); below it the API would silently not cache,
and nothing is marked. Usage: reads (``cache_read_input_tokens``, 0.1x) and writes
(``cache_creation_input_tokens``, of which ``cache_creation.ephemeral_1h_input_tokens``
one-hour ones, 2x; the rest 1.25x).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..core import errors
from ..core.types import BatchInfo, RateLimitInfo, Reply, Request, Usage
from ..planning.tokens import counter_for
from ..planning.ways import Offer
from .base import BatchHTTP, BatchOutcome, Provider, classify_http_error, parse_int

if TYPE_CHECKING:  # pydantic loads only when schema= is used
    from ..core.schema import OutputSchema

API_VERSION = "2026-10-21"
"""``anthropic-version``, as the SDK 2.14 sends it (anthropic/_constants.py)."""

DEFAULT_MAX_TOKENS = 1024
"""Sent when the run sets no ``max_tokens=``: the API refuses a request without one. It
bounds an answer (longer ones stop with finish_reason "length"), so set ``max_tokens=`` for
long outputs."""

_FINISH = {"end_turn": "stop", "max_tokens": "length", "tool_use": "stop"}
TOOL_DESCRIPTION = "Record the answer. Fill every field from the request."
SCHEMA_PROMPT_TOKENS = 346
"""The largest tool-use system prompt Anthropic documents, billed as input (Claude 4 family,
tool_choice auto; forced tools: 313, Claude Haiku 3.x: 340); its structured outputs add an
instruction of the same kind. The budget's worst case allows it for both."""
_TOOL_MODELS = re.compile(r"claude-(3|instant|2|sonnet-4-0|opus-4-0|(sonnet|opus)-4-2025)")


def uses_tool_for_schema(model: str) -> bool:
    """Claude 3.x and the first Claude 4 models predate structured outputs (Opus 4.1, Sonnet
    4.5, Haiku 4.5 and later have them): they get a forced tool call instead."""
    return bool(_TOOL_MODELS.search(model.lower()))
_SYSTEM_ROLES = ("system", "developer")
PACKED_ROWS = "\n\n<rows>\n"
"""Where a packed request's rows start (CONTRACTS C1): everything before is the same in every pack."""


def _is_pack(params: dict[str, Any]) -> bool:
    """Whether a request's parameters ask for the packed answer (``core.schema.PackedSchema``:
    its forced tool by name, or its shape: one "rows" array of objects with an "id")."""
    tools = params.get("tools")
    if tools:  # a schema's tool: core.schema (and pydantic) are loaded already
        from ..core.schema import PACKED_NAME

        return any(isinstance(t, dict) and t.get("name") == PACKED_NAME for t in tools)
    schema = ((params.get("output_config") or {}).get("format") or {}).get("schema") or {}
    props = schema.get("properties") or {}
    items = (props.get("rows") or {}).get("items") or {} if set(props) == {"rows"} else {}
    return "id" in (items.get("properties") or {})


class AnthropicMessages(Provider):
    name = "anthropic"
    key_env = "ANTHROPIC_API_KEY"
    api_version = API_VERSION
    max_tokens_field = "max_tokens"
    default_max_tokens = DEFAULT_MAX_TOKENS
    cache_writes = True

    def __init__(self, model, base_url, api_key, *, max_tokens_field: str | None = None,
                 **declared: Any) -> None:
        # The SDK's base_url is the root (https://api.anthropic.com) and its paths carry /v1;
        # a base_url written OpenAI-style with /v1 at the end means the same server.
        super().__init__(model, base_url.rstrip("/").removesuffix("/v1"), api_key,
                         **declared)  # key_env, capabilities
        if max_tokens_field:
            self.max_tokens_field = max_tokens_field
        self._url = f"{self.base_url}/v1/messages"
        self._headers = {
            "content-type": "application/json",
            "anthropic-version": self.api_version,
        }
        if api_key is not None:
            self._headers["authorization"] = f"Bearer {api_key.reveal()}"

    def _body(self, request: Request, ttl: str | None = None) -> dict[str, Any]:
        system, messages = split_system(request.messages)
        messages = self._mark_cache(system, messages, ttl, request.params)
        body: dict[str, Any] = {"model": self.model, "max_tokens": DEFAULT_MAX_TOKENS}
        if system is not None:
            body["system"] = system
        body["messages"] = messages
        for name, value in request.params.items():
            if value is None:
                continue
            if name == "max_tokens":
                body[self.max_tokens_field] = value
            elif name == "stop":  # OpenAI's spelling
                body["stop_sequences"] = [value] if isinstance(value, str) else value
            else:
                body[name] = value
        return body

    def _mark_cache(self, system: System, messages: list[dict[str, Any]],
                    ttl: str | None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """``messages`` with the static start of the last user message split off into a
        ``cache_control`` block, when system + that start reach the model's caching minimum.
        A pack (``params`` ask for the packed answer) is cut where its rows start; any other
        request after the template's prefix (a row's value may hold the rows marker's text)."""
        minimum = self.capabilities.cache_min_tokens
        if not minimum or not messages or messages[-1].get("role") != "user":
            return messages
        content = messages[-1].get("content")
        if not isinstance(content, str):
            return messages
        cut = content.find(PACKED_ROWS) if _is_pack(params or {}) else -1
        if cut < 0:
            cut = len(self.prefix) if self.prefix and content.startswith(self.prefix) else 0
        static, rest = content[:cut], content[cut:]
        if not static.strip():
            return messages
        system_text = system if isinstance(system, str) else json.dumps(system or "")
        if self._static_tokens(system_text if system else "", static) < minimum:
            return messages
        mark: dict[str, Any] = {"type": "ephemeral"}
        if ttl:
            mark["ttl"] = ttl
        blocks = [{"type": "text", "text": static, "cache_control": mark}]
        if rest:
            blocks.append({"type": "text", "text": rest})
        return [*messages[:-1], {"role": "user", "content": blocks}]

    def offer(self, system: str | None, count: Any, fields: int = 1) -> Offer:
        """As every provider's, but only a template prefix is marked (no prefix: no caching)."""
        offer = super().offer(system, count, fields)
        return offer if self.prefix.strip() else replace(offer, tokens=0)

    def _static_tokens(self, system: str, static: str) -> int:
        memo = self.__dict__.setdefault("_static_memo", {})
        if (system, static) not in memo:
            counter = counter_for(f"anthropic/{self.model}")
            memo[(system, static)] = counter.count(system) + counter.count(static) + 8
        return memo[(system, static)]

    def structured(self, schema: OutputSchema) -> dict[str, Any]:
        """``output_config.format`` (structured outputs) where the model has it; older models
        get the schema as a tool they are forced to call, whose input is the answer."""
        if uses_tool_for_schema(self.model):
            return {"tools": [{"name": schema.name, "description": TOOL_DESCRIPTION,
                               "input_schema": schema.anthropic_schema()}],
                    "tool_choice": {"type": "tool", "name": schema.name}}
        return {"output_config": {"format": {"type": "json_schema", "schema": schema.anthropic_schema()}}}

    def hidden_prompt(self, schema: OutputSchema) -> tuple[int, str]:
        return SCHEMA_PROMPT_TOKENS, f"{schema.name} {TOOL_DESCRIPTION}"

    def _is_error_envelope(self, data: dict[str, Any]) -> bool:
        return data.get("type") == "error"

    def _reply(self, data: dict[str, Any]) -> Reply:
        try:
            blocks = data["content"]
            texts = [b["text"] for b in blocks if b.get("type") == "text"]
            if not texts:  # a forced tool's call (schema= on older models): its input is the answer
                texts = [json.dumps(b["input"], ensure_ascii=False)
                         for b in blocks if b.get("type") == "tool_use"][:1]
            stop = data.get("stop_reason")
            u = data.get("usage") or {}
            read = int(u.get("cache_read_input_tokens") or 0)
            write = int(u.get("cache_creation_input_tokens") or 0)
            created = u.get("cache_creation") or {}
            usage = Usage(
                input_tokens=int(u.get("input_tokens") or 0) + read + write,
                output_tokens=int(u.get("output_tokens") or 0),
                cached_tokens=read,
                cache_write_tokens=write,
                cache_write_1h_tokens=min(write, int(created.get("ephemeral_1h_input_tokens") or 0)),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise errors.MalformedResponse(f"unexpected response shape: {exc!r}") from None
        # No text block at all (a refusal, max_tokens=0) is no answer; the usage still counts.
        text = "".join(texts) if texts else None
        return Reply(text, usage, _FINISH.get(stop, stop), data.get("model"))

    # batch jobs ------------------------------------------------------------------------------

    max_batch_requests = 100_000
    max_batch_bytes = 256 * 1024 * 1024

    def batch_line(self, request: Request) -> bytes:
        return json.dumps({"custom_id": request.key, "params": self._body(request, ttl="1h")},
                          ensure_ascii=False).encode()

    async def create_batch(self, http: BatchHTTP, lines: list[bytes], tag: str = "") -> BatchInfo:
        body = b'{"requests": [' + b",".join(lines) + b"]}"
        # resend=False: a timed-out create may have created the job; sending it again could
        # pay for every request twice.
        job = await http.call("POST", f"{self.base_url}/v1/messages/batches", self._headers, body,
                              self._parse_object, resend=False)
        return self._batch_info(job)

    async def get_batch(self, http: BatchHTTP, batch_id: str) -> BatchInfo:
        job = await http.call("GET", f"{self.base_url}/v1/messages/batches/{batch_id}",
                              self._headers, None, self._parse_object)
        return self._batch_info(job)

    async def cancel_batch(self, http: BatchHTTP, batch_id: str) -> BatchInfo:
        job = await http.call("POST", f"{self.base_url}/v1/messages/batches/{batch_id}/cancel",
                              self._headers, None, self._parse_object)
        return self._batch_info(job)

    @property
    def _download_headers(self) -> dict[str, str]:
        return self._headers

    def parse_batch_result(self, obj: dict[str, Any]) -> BatchOutcome:
        """``{custom_id, result: {type, message | error}}`` -> (custom_id, reply, error)."""
        custom_id = str(obj.get("custom_id") or "")
        result = obj.get("result")
        kind = result.get("type") if isinstance(result, dict) else None
        if kind == "succeeded":
            try:
                return custom_id, self._reply(result.get("message") or {}), None
            except errors.ProviderError as exc:
                return custom_id, None, exc
        if kind == "errored":
            envelope = result.get("error") or {}
            err = envelope.get("error", envelope) if isinstance(envelope, dict) else {}
            err_type = str(err.get("type") or "error") if isinstance(err, dict) else "error"
            message = str(err.get("message") or err_type) if isinstance(err, dict) else str(err)
            if err_type == "invalid_request_error":
                return custom_id, None, errors.BadRequestError(self.scrub(message))
            return custom_id, None, errors.RowError(self.scrub(f"{err_type}: {message}"), kind=err_type)
        if kind == "canceled":
            return custom_id, None, errors.RowError(
                "canceled: the batch was canceled before this request was processed", kind="cancelled")
        if kind == "expired":
            return custom_id, None, errors.RowError(
                "expired: the batch ended (24 h) before this request was processed", kind="expired")
        return custom_id, None, errors.MalformedResponse(f"unknown batch result type {kind!r}")

    def _batch_info(self, job: dict[str, Any]) -> BatchInfo:
        try:
            status = str(job["processing_status"])
            counts_in = job.get("request_counts") or {}
            counts = {name: int(counts_in.get(name) or 0)
                      for name in ("processing", "succeeded", "errored", "canceled", "expired")}
            info = BatchInfo(id=str(job["id"]), status=status, ended=status == "ended")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise errors.MalformedResponse(f"unexpected batch object: {exc!r}") from None
        info.counts = {"total": sum(counts.values()), **counts}
        url = job.get("results_url")
        if info.ended and isinstance(url, str) and url:
            info.result_urls = [url if "://" in url else f"{self.base_url}/{url.lstrip('/')}"]
        return info

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        """``anthropic-ratelimit-*``: requests, and ``tokens`` (the tightest token limit in
        force) or, when absent, ``input-tokens``; resets are RFC 3339 times."""
        def get(kind: str, field: str) -> str | None:
            return headers.get(f"anthropic-ratelimit-{kind}-{field}")

        tokens = "tokens" if get("tokens", "limit") is not None else "input-tokens"
        if get("requests", "limit") is None and get(tokens, "limit") is None:
            return None
        return RateLimitInfo(
            limit_requests=parse_int(get("requests", "limit")),
            remaining_requests=parse_int(get("requests", "remaining")),
            reset_requests=seconds_until(get("requests", "reset")),
            limit_tokens=parse_int(get(tokens, "limit")),
            remaining_tokens=parse_int(get(tokens, "remaining")),
            reset_tokens=seconds_until(get(tokens, "reset")),
        )

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        message, kind = f"HTTP {status}", ""
        try:
            data = json.loads(body)
            err = data.get("error", data) if isinstance(data, dict) else {}
            if isinstance(err, dict):
                message = str(err.get("message") or message)
                kind = str(err.get("type") or "")
            elif isinstance(err, str):
                message = err
        except (ValueError, UnicodeDecodeError):
            text = body[:200].decode("utf-8", "replace").strip()
            if text:
                message = text
        message = self.scrub(message)
        # Out of credit is a 400 invalid_request_error (or billing_error / 402): nothing else
        # will pass either, so it stops the run instead of failing every row in turn.
        if status == 402 or kind == "billing_error" or "credit balance is too low" in message:
            return errors.QuotaExceededError(message, status=status)
        exc = classify_http_error(status, message, kind, headers)
        if isinstance(exc, errors.AuthenticationError):
            exc.message += f" (check {self._key_hint()})"
        return exc


System = str | list[dict[str, Any]] | None


def split_system(messages: list[dict[str, Any]]) -> tuple[System, list[dict[str, Any]]]:
    """Chat messages -> (Anthropic's top-level ``system``, the user/assistant turns).

    Several system messages are joined in order; text stays a plain string unless one of
    them is a list of content blocks, which is kept as blocks (cache_control and all).
    """
    system: list[Any] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            if message.get("content"):
                system.append(message["content"])
        else:
            turns.append({"role": role, "content": message.get("content")})
    if not system:
        return None, turns
    if all(isinstance(part, str) for part in system):
        return "\n\n".join(system), turns
    blocks: list[dict[str, Any]] = []
    for part in system:
        blocks.extend([{"type": "text", "text": part}] if isinstance(part, str) else part)
    return blocks, turns


def seconds_until(when: str | None) -> float | None:
    """An RFC 3339 time ("2026-01-15T12:00:30Z") -> seconds from now (0 if already past)."""
    if not when:
        return None
    try:
        moment = datetime.fromisoformat(when.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:  # the API always says UTC; read a bare time as UTC too
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - time.time())
