"""OpenAI chat completions, and every API that speaks it (DeepSeek, Gemini's OpenAI
endpoint, gateways, vLLM, Ollama, the simulator).

OpenAI's Batch API (``mode="batch"``): the requests go as JSONL lines ``{custom_id, method,
url, body}`` in a file uploaded with ``POST /files`` (multipart, ``purpose=batch``); ``POST
/batches`` starts the job (``completion_window: "24h"``); ``GET /batches/{id}`` reports its
status (validating, in_progress, finalizing, then completed, failed, expired or cancelled) and
``request_counts``; the answers are JSONL files (``output_file_id`` for successes,
``error_file_id`` for failures and expired requests) read with ``GET /files/{id}/content``
and matched by ``custom_id``. At most 50,000 requests and 200 MB per job.

Prompt caching is automatic at OpenAI (prefixes of 1,024 tokens and more, in 128-token
steps), Gemini and DeepSeek: the run puts the static part first (system prompt, then the
template's text before its first field), and where the API takes it (``Capabilities.cache_key``)
every request carries ``prompt_cache_key``, a digest of model, system prompt and that prefix, so
they are routed to the same cache. Cached tokens come back as
``usage.prompt_tokens_details.cached_tokens`` (OpenAI, Gemini; part of ``prompt_tokens``) or
``usage.prompt_cache_hit_tokens`` (DeepSeek).

``tier="flex"`` (models with ``Capabilities.flex``) sends ``service_tier: "flex"``: billed at
Batch API rates, slower, and answered with 429 when capacity is short (the flex guide's
"resource unavailable"); such a 429 is waited out patiently (:data:`FLEX_RETRY_AFTER` unless the
server says how long), as a rate limit: it uses up no retries and counts nothing toward the
circuit breaker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core import errors
from ..core.types import BatchInfo, RateLimitInfo, Reply, Request, Usage
from .base import (
    BatchHTTP,
    BatchOutcome,
    Provider,
    classify_http_error,
    multipart,
    parse_duration,
    parse_int,
)

if TYPE_CHECKING:  # pydantic loads only when schema= is used
    from ..core.schema import OutputSchema

BATCH_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
DEAD = frozenset({"failed", "expired", "cancelled", "cancelling"})  # no answers to collect
FLEX_RETRY_AFTER = 15.0
"""Seconds to wait after a flex 429 that names no wait: capacity comes back in minutes, not ms."""
TAG_FIELD = "llmbatch_pd_requests"
"""The job's metadata field holding a digest of its request keys (found again by it)."""


class OpenAIBatches:
    """OpenAI's Batch API for any endpoint it batches: chat completions and embeddings
    share every line of it, and differ only in ``batch_endpoint`` and in the ``_body`` /
    ``_reply`` of the dialect that mixes this in (which also sets ``_auth`` and ``_headers``)."""

    base_url: str
    _auth: dict[str, str]
    _headers: dict[str, str]
    max_batch_requests = 50_000
    max_batch_bytes = 200 * 1024 * 1024
    batch_endpoint = "/v1/chat/completions"
    """The ``url`` of every line and the job's ``endpoint``: OpenAI's literal path, whatever
    prefix the base URL has."""

    def _batch_body(self, request: Request) -> dict[str, Any]:
        """A batch line's body: the real-time one unless the dialect says otherwise."""
        return self._body(request)  # type: ignore[attr-defined]

    def batch_line(self, request: Request) -> bytes:
        line = {"custom_id": request.key, "method": "POST", "url": self.batch_endpoint,
                "body": self._batch_body(request)}
        return json.dumps(line, ensure_ascii=False).encode()

    async def create_batch(self, http: BatchHTTP, lines: list[bytes], tag: str = "") -> BatchInfo:
        ctype, data = multipart({"purpose": "batch"}, "file", "llmbatch_pd.jsonl",
                                b"\n".join(lines) + b"\n", "application/jsonl")
        upload = await http.call("POST", f"{self.base_url}/files", self._auth | {"content-type": ctype},
                                 data, self._parse_object)
        file_id = upload.get("id")
        if not isinstance(file_id, str):
            raise errors.MalformedResponse("the file upload's answer has no id")
        body = json.dumps({"input_file_id": file_id, "endpoint": self.batch_endpoint,
                           "completion_window": "24h",
                           "metadata": {"created_by": "llmbatch_pd", TAG_FIELD: tag}}).encode()
        # resend=False: a timed-out create may have created the job; sending it again could
        # pay for every request twice.
        job = await http.call("POST", f"{self.base_url}/batches", self._headers, body,
                              self._parse_object, resend=False)
        return self._batch_info(job)

    async def find_batch(self, http: BatchHTTP, tag: str) -> BatchInfo | None:
        """The newest job (of the last 100) whose metadata carries ``tag`` and that has not
        failed, expired or been cancelled: its answers are there or on their way."""
        if not tag:
            return None
        page = await http.call("GET", f"{self.base_url}/batches?limit=100", self._auth, None,
                               self._parse_object)
        for job in page.get("data") or []:
            if (isinstance(job, dict) and (job.get("metadata") or {}).get(TAG_FIELD) == tag
                    and job.get("status") not in DEAD):
                return self._batch_info(job)
        return None

    async def get_batch(self, http: BatchHTTP, batch_id: str) -> BatchInfo:
        job = await http.call("GET", f"{self.base_url}/batches/{batch_id}", self._auth, None,
                              self._parse_object)
        return self._batch_info(job)

    async def cancel_batch(self, http: BatchHTTP, batch_id: str) -> BatchInfo:
        job = await http.call("POST", f"{self.base_url}/batches/{batch_id}/cancel", self._auth,
                              None, self._parse_object)
        return self._batch_info(job)

    @property
    def _download_headers(self) -> dict[str, str]:
        return self._auth

    def parse_batch_result(self, obj: dict[str, Any]) -> BatchOutcome:
        """``{custom_id, response: {status_code, body}, error}`` -> (custom_id, reply, error)."""
        custom_id = str(obj.get("custom_id") or "")
        failure, response = obj.get("error"), obj.get("response")
        if failure:
            if not isinstance(failure, dict):
                return custom_id, None, errors.RowError(f"batch request failed: {failure}")
            code = str(failure.get("code") or "")
            message = str(failure.get("message") or code or "batch request failed")
            kind = {"batch_expired": "expired", "batch_cancelled": "cancelled"}.get(code, "bad request")
            return custom_id, None, errors.RowError(
                self.scrub(f"{message} ({code})" if code else message), kind=kind)
        if not isinstance(response, dict):
            return custom_id, None, errors.MalformedResponse("batch result has no response")
        try:
            status = int(response.get("status_code") or 0)
        except (TypeError, ValueError):
            status = 0
        body = response.get("body")
        if status >= 400 or not isinstance(body, dict):
            raw = json.dumps(body).encode() if body is not None else b""
            return custom_id, None, self._error(status if status >= 400 else 500, {}, raw)
        try:
            return custom_id, self._reply(body), None
        except errors.ProviderError as exc:
            return custom_id, None, exc

    def _batch_info(self, job: dict[str, Any]) -> BatchInfo:
        try:
            status = str(job["status"])
            counts_in = job.get("request_counts") or {}
            total = int(counts_in.get("total") or 0)
            succeeded = int(counts_in.get("completed") or 0)
            errored = int(counts_in.get("failed") or 0)
            info = BatchInfo(id=str(job["id"]), status=status, ended=status in BATCH_ENDED)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise errors.MalformedResponse(f"unexpected batch object: {exc!r}") from None
        left = max(0, total - succeeded - errored)
        counts = dict(total=total, processing=left, succeeded=succeeded, errored=errored,
                      expired=0, canceled=0)
        if info.ended:
            counts["processing"] = 0
            counts[{"expired": "expired", "cancelled": "canceled"}.get(status, "errored")] += left
            info.result_urls = [f"{self.base_url}/files/{job[name]}/content"
                                for name in ("output_file_id", "error_file_id") if job.get(name)]
        info.counts = counts
        if status == "failed":
            found = (job.get("errors") or {}).get("data") or []
            reasons = [str(e.get("message") or e.get("code")) for e in found if isinstance(e, dict)]
            info.error = self.scrub("; ".join(reasons) or "the batch failed")
        return info


class OpenAIChat(OpenAIBatches, Provider):
    name = "openai"
    key_env = "OPENAI_API_KEY"
    cache_step = 128
    max_tokens_field = "max_tokens"
    """What carries ``max_tokens``: OpenAI's own reasoning models refuse ``max_tokens`` and read
    ``max_completion_tokens`` (the registry passes that for api.openai.com); vLLM, Ollama and
    most gateways read ``max_tokens``."""

    def __init__(self, model, base_url, api_key, *, max_tokens_field: str | None = None,
                 **declared: Any) -> None:
        super().__init__(model, base_url, api_key, **declared)  # key_env, capabilities
        if max_tokens_field:
            self.max_tokens_field = max_tokens_field
        self._url = f"{self.base_url}/chat/completions"
        self._auth: dict[str, str] = {}
        if api_key is not None:
            self._auth["authorization"] = f"Bearer {api_key.reveal()}"
        self._headers = {"content-type": "application/json", **self._auth}

    def _body(self, request: Request, max_tokens_field: str | None = None) -> dict[str, Any]:
        field = max_tokens_field or self.max_tokens_field
        body: dict = {"model": self.model, "messages": request.messages}
        for name, value in request.params.items():
            if value is None:
                continue
            body[field if name == "max_tokens" else name] = value
        if self.capabilities.cache_key and "prompt_cache_key" not in body:
            key = self.cache_key(request.messages)
            if key:
                body["prompt_cache_key"] = key
        if self.tier == "flex":
            body["service_tier"] = "flex"
        return body

    def cache_key(self, messages: list[dict[str, Any]]) -> str | None:
        """``prompt_cache_key``: a digest of the model, the system prompt and the template's
        prefix: the same for every request of a run, whatever its rows. None when the run has
        no static part (nothing shared to route to one cache)."""
        system = tuple(m.get("content") for m in messages if m.get("role") in ("system", "developer"))
        if not system and not self.prefix.strip():
            return None
        known = self.__dict__.setdefault("_cache_keys", {})  # one digest a run, not one a request
        plain = all(isinstance(c, str) for c in system)  # content blocks are not hashable
        if plain and system in known:
            return known[system]
        text = json.dumps([self.model, list(system), self.prefix], ensure_ascii=False, default=str)
        key = "llmbatch-" + hashlib.sha256(text.encode()).hexdigest()[:24]
        if plain:
            known[system] = key
        return key

    def _batch_body(self, request: Request) -> dict[str, Any]:
        """A batch line runs on OpenAI's own Batch API (a server with ``/v1/batches`` is OpenAI
        or a proxy handing the file to it), so it carries OpenAI's own field."""
        return self._body(request, "max_completion_tokens")

    def _reply(self, data: dict[str, Any]) -> Reply:
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content")
            if text is None and message.get("refusal"):
                raise errors.BadRequestError(f"the model refused: {message['refusal']}")
            u = data.get("usage") or {}
            details = u.get("prompt_tokens_details") or {}
            # DeepSeek: prompt_cache_hit_tokens (+ miss = prompt_tokens); others: the details
            cached = details.get("cached_tokens") or u.get("prompt_cache_hit_tokens") or 0
            usage = Usage(
                input_tokens=int(u.get("prompt_tokens") or 0),
                output_tokens=int(u.get("completion_tokens") or 0),
                cached_tokens=int(cached),
            )
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise errors.MalformedResponse(f"unexpected response shape: {exc!r}") from None
        return Reply(text, usage, choice.get("finish_reason"), data.get("model"))

    def structured(self, schema: OutputSchema) -> dict[str, Any]:
        """OpenAI's strict ``json_schema`` response format, as the SDK's ``parse()`` sends it;
        Gemini's and most gateways' OpenAI endpoints accept the same field. DeepSeek has only
        JSON mode: ``json_object``, with the schema in the system prompt (RunSpec adds it)."""
        if self.schema_in_prompt:
            return {"response_format": {"type": "json_object"}}
        return {"response_format": schema.openai_format()}

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
        exc = classify_http_error(status, self.scrub(message), str(code or ""), headers)
        if self.tier == "flex" and isinstance(exc, errors.RateLimitError) and exc.retry_after is None:
            exc.retry_after = FLEX_RETRY_AFTER  # capacity, not our pace: wait it out patiently
        if isinstance(exc, errors.AuthenticationError):
            exc.message += f" (check {self._key_hint()})"
        return exc
