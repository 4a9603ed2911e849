"""The provider seam: a request becomes bytes, bytes become a Reply or a classified error.

Providers send nothing and know nothing of scheduling: ``llmbatch_pd.transport`` owns the
connections, the retries and the pacing. Batch jobs (``mode="batch"``) use the same seam: a
provider with a batch API writes its lines and reads its job and result objects, and talks
HTTP only through the :class:`BatchHTTP` it is handed (``transport.http.BatchClient``; the
polling is ``llmbatch_pd.runs.batch_collect``'s).

What a provider can do (a batch API, embeddings, structured output) is declared once, in its
:class:`Capabilities`, when the registry builds it; nothing is set on a provider afterwards.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from ..core import errors
from ..core.secrets import Secret, safe_url
from ..core.types import BatchInfo, RateLimitInfo, Reply, Request
from ..planning.ways import Offer

if TYPE_CHECKING:  # pydantic loads only when schema= is used
    from ..core.schema import OutputSchema

T = TypeVar("T")
Parse = Callable[[int, Mapping[str, str], bytes], T]
"""(status, headers, body) -> a value, or raise a classified ProviderError."""
BatchOutcome = tuple[str, Reply | None, "errors.ProviderError | None"]
"""(custom_id, reply, error): one line of a batch's results."""


class BatchHTTP(Protocol):
    """What a provider may ask of the batch runner's HTTP client."""

    async def call(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                   parse: Parse[T], *, resend: bool = True) -> T:
        """Send, and hand the answer to ``parse``. Retryable errors are retried; with
        ``resend=False`` only those the server clearly refused (429, 5xx), never a timeout
        or a dropped connection after which the request may have taken effect."""
        ...

    def lines(self, url: str, headers: Mapping[str, str],
              on_error: Callable[[int, Mapping[str, str], bytes], errors.ProviderError]
              ) -> AsyncIterator[bytes]:
        """The non-empty lines of a (JSONL) download, as they arrive."""
        ...


@dataclass(frozen=True)
class Capabilities:
    """What an API offers beyond real-time chat, declared per preset in the registry."""

    batch: bool = False
    """A batch API that ``mode="batch"`` can use (DeepSeek speaks OpenAI's dialect, without one)."""
    embeddings: bool = False
    """An OpenAI-style ``/embeddings`` route (``s.llm.embed``)."""
    structured: Literal["schema", "json"] = "schema"
    """``schema=``: "schema", the request carries the JSON schema; "json", JSON mode only, the
    schema goes in the system prompt (DeepSeek)."""
    cache_min_tokens: int = 0
    """The shortest prompt prefix the API caches (0: no prompt caching known here). OpenAI,
    Gemini: automatic above it; Anthropic: what ``cache_control`` marks, when it is this long."""
    cache_key: bool = False
    """The API takes ``prompt_cache_key`` (OpenAI): requests with the same key share a cache."""
    flex: bool = False
    """OpenAI's flex tier (``tier="flex"``: ``service_tier: "flex"``, batch prices, slower)."""


class Provider(ABC):
    """One API dialect at one endpoint, for one model."""

    name = "provider"
    key_env: str | None = None
    default_max_tokens: int | None = None
    """The output limit sent when the run sets none (None: the model's own)."""
    capabilities = Capabilities()
    """The dialect's own, for a provider built directly; the registry passes the preset's."""

    cache_step = 1
    """Prompt caching hits come in multiples of this many tokens (OpenAI: 128)."""

    def __init__(self, model: str, base_url: str, api_key: Secret | None, *,
                 key_env: str | None = None, capabilities: Capabilities | None = None,
                 prefix: str = "", tier: str | None = None) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        if key_env is not None:  # the variable the key is read from (a 401 names it)
            self.key_env = key_env
        if capabilities is not None:
            self.capabilities = capabilities
        self.prefix = prefix
        """The run's template text before its first field: the static part of every prompt,
        which prompt caching can serve (``Template.prefix``)."""
        self.tier = tier
        """``tier=``: None or "standard", or "flex" (OpenAI)."""

    cache_writes = False
    """Prompt-cache writes are billed (Anthropic); elsewhere a miss pays the input price."""

    def offer(self, system: str | None, count: Callable[[str], int], fields: int = 1) -> Offer:
        """What this provider offers the run's requests beyond the list price, for the
        estimate: the prompt tokens each can read from its cache once an earlier one wrote
        them (system prompt and template prefix, counted with ``count``, in the API's steps;
        0 under its minimum or without prompt caching), a batch API, the flex tier."""
        caps = self.capabilities
        static = (count(system) + 4 if system else 0) + (count(self.prefix) + 4 if self.prefix else 0)
        tokens = static - static % self.cache_step
        tokens = tokens if caps.cache_min_tokens and tokens >= caps.cache_min_tokens else 0
        return Offer(tokens=tokens, minimum=caps.cache_min_tokens, step=self.cache_step,
                     writes=self.cache_writes, static=static, batch=caps.batch, flex=caps.flex,
                     fields=max(1, fields))

    @property
    def supports_batch(self) -> bool:
        return self.capabilities.batch

    @property
    def schema_in_prompt(self) -> bool:
        """JSON mode only (DeepSeek): the schema goes in the system prompt, not the request."""
        return self.capabilities.structured == "json"

    @property
    def endpoint(self) -> str:
        """What identifies this model's answers in a cache key (no secret in it)."""
        return f"{self.name}:{self.base_url}"

    # a dialect sets these two in __init__ and implements _body and _reply
    _url: str
    _headers: dict[str, str]

    @abstractmethod
    def _body(self, request: Request) -> dict[str, Any]:
        """The JSON body of one real-time request (also a batch line's payload)."""

    @abstractmethod
    def _reply(self, data: dict[str, Any]) -> Reply:
        """A successful answer's JSON -> Reply (real time and batch results alike)."""

    def prepare(self, request: Request) -> tuple[str, dict[str, str], bytes]:
        """URL, headers and body for one request."""
        return self._url, self._headers, json.dumps(self._body(request), ensure_ascii=False).encode()

    def parse(self, status: int, headers: Mapping[str, str], body: bytes) -> Reply:
        """A Reply for a successful answer; raises a ProviderError otherwise. A cost the
        server reported in a header (a gateway's) rides on its usage."""
        reply = self._reply(self._parse_object(status, headers, body))
        reply.usage.cost = reported_cost(headers)
        return reply

    def _parse_object(self, status: int, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """A 2xx body as a JSON object; a classified error for anything else."""
        if status >= 400:
            raise self._error(status, headers, body)
        data = self._load_json(body)
        if self._is_error_envelope(data):  # an error body on a 2xx (a broken proxy)
            raise self._error(500, headers, body)
        return data

    def _is_error_envelope(self, data: dict[str, Any]) -> bool:
        return False

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo | None:
        return None

    def structured(self, schema: OutputSchema) -> dict[str, Any]:
        """The body fields that ask for answers fitting ``schema`` (``schema=``)."""
        raise errors.InputError(f"{self.name} models do not support schema= here")

    # batch jobs: only dialects with a batch API override these ------------------------------

    max_batch_requests = 0
    max_batch_bytes = 0
    max_batch_inputs = 0  # a cap on what a job's requests carry (0: none)

    def batch_inputs(self, request: Request) -> int:
        """What ``request`` counts against ``max_batch_inputs`` (embeddings: its texts)."""
        return 0

    def batch_line(self, request: Request) -> bytes:
        """One request as a line of a batch (its custom_id is ``request.key``)."""
        raise NotImplementedError(f"{self.name} has no batch API")

    async def create_batch(self, http: BatchHTTP, lines: list[bytes], tag: str = "") -> BatchInfo:
        """Submit ``lines`` (from :meth:`batch_line`) as one job, labelled with ``tag`` (a
        digest of its requests) where the API keeps labels."""
        raise NotImplementedError(f"{self.name} has no batch API")

    async def find_batch(self, http: BatchHTTP, tag: str) -> BatchInfo | None:
        """A live or finished job created with ``tag`` (one the cache never heard of: a create
        that timed out, or a run without a cache), or None. Only APIs with labels can say."""
        return None

    async def get_batch(self, http: BatchHTTP, batch_id: str) -> BatchInfo:
        raise NotImplementedError(f"{self.name} has no batch API")

    async def cancel_batch(self, http: BatchHTTP, batch_id: str) -> BatchInfo:
        raise NotImplementedError(f"{self.name} has no batch API")

    async def batch_results(self, http: BatchHTTP, info: BatchInfo) -> AsyncIterator[BatchOutcome]:
        """Every result line of an ended job, parsed, as it is downloaded."""
        for url in info.result_urls:
            async for line in http.lines(url, self._download_headers, self._error):
                try:
                    obj = load_line(line)
                except errors.MalformedResponse:
                    continue  # its request gets "no result" from the runner
                yield self.parse_batch_result(obj)

    @property
    def _download_headers(self) -> dict[str, str]:
        """Headers for fetching a job's result files (auth, no JSON body)."""
        return {}

    def _error(self, status: int, headers: Mapping[str, str], body: bytes) -> errors.ProviderError:
        raise NotImplementedError

    def parse_batch_result(self, obj: dict[str, Any]) -> BatchOutcome:
        """One result line (parsed JSON) -> (custom_id, reply, error)."""
        raise NotImplementedError(f"{self.name} has no batch API")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={safe_url(self.base_url)!r})"

    # helpers shared by the dialects -------------------------------------------------------

    def _key_hint(self) -> str:
        """Where the key came from, for a 401's message (never the key itself)."""
        if self.api_key is not None and self.api_key.source != "api_key=":
            return f"the key in ${self.api_key.source}"
        if self.api_key is not None:
            return "the api_key= you passed"
        return f"${self.key_env}, which is not set" if self.key_env else "the API key"

    def hidden_prompt(self, schema: OutputSchema) -> tuple[int, str]:
        """What the API adds to the prompt, unseen and billed as input, when ``schema=`` is
        used: (tokens it documents, text of ours it wraps in, to be counted). None here."""
        return 0, ""

    def scrub(self, text: str) -> str:
        """``text`` without this provider's key (a server's or a library's message may echo it)."""
        return self.api_key.scrub(text) if self.api_key else text

    def _load_json(self, body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.MalformedResponse(
                f"unreadable response body ({len(body)} bytes): {exc}"
            ) from None
        if not isinstance(data, dict):
            raise errors.MalformedResponse("response body is not a JSON object")
        return data


def multipart(fields: Mapping[str, str], file_field: str, filename: str, data: bytes,
              content_type: str = "application/octet-stream") -> tuple[str, bytes]:
    """A multipart/form-data body: (its content-type header, the bytes)."""
    boundary = f"llmbatch{uuid.uuid4().hex}"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
    )
    return f"multipart/form-data; boundary={boundary}", b"".join(
        [*parts, data, f"\r\n--{boundary}--\r\n".encode()]
    )


def load_line(line: bytes) -> dict[str, Any]:
    """One JSONL line -> a JSON object, or MalformedResponse."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.MalformedResponse(f"unreadable batch result line: {exc}") from None
    if not isinstance(obj, dict):
        raise errors.MalformedResponse("batch result line is not a JSON object")
    return obj


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations: '6m0s', '1s', '12ms', '1m30.5s' -> seconds."""
    if not text:
        return None
    parts = _DURATION.findall(text)
    if not parts:
        try:
            return float(text)
        except ValueError:
            return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from retry-after-ms, else retry-after (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


COST_HEADER = "x-litellm-response-cost"
"""LiteLLM's proxy: the answer's cost in dollars as a float ("0.0037", "5.85e-06"),
documented in its docs/proxy/response_headers.md ("Cost Tracking Headers")."""


def reported_cost(headers: Mapping[str, str]) -> float | None:
    """The dollars a gateway reported for one answer, or None (absent or unreadable)."""
    value = headers.get(COST_HEADER)
    if not value:
        return None
    try:
        dollars = float(value)
    except ValueError:
        return None
    return dollars if math.isfinite(dollars) and dollars >= 0 else None


def parse_int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def classify_http_error(
    status: int,
    message: str,
    code: str | None,
    headers: Mapping[str, str],
) -> errors.ProviderError:
    """Map an HTTP failure to the error class that tells the engine what to do."""
    retry_after = parse_retry_after(headers)
    code = (code or "").lower()
    if status in (401, 403):
        return errors.AuthenticationError(message, status=status)
    if status == 429:
        if "insufficient_quota" in code or "quota" in code and "rate" not in code:
            return errors.QuotaExceededError(message, status=status)
        return errors.RateLimitError(message, status=status, retry_after=retry_after)
    if status == 529 or "overloaded" in code:
        return errors.OverloadedError(message, status=status, retry_after=retry_after)
    if status in (408, 409) or status >= 500:
        return errors.ServerError(message, status=status, retry_after=retry_after)
    if "context_length" in code or "too long" in message.lower() and status == 400:
        return errors.ContextLengthError(message, status=status)
    return errors.BadRequestError(message, status=status)
