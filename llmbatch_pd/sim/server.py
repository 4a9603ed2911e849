"""The simulator's aiohttp application: OpenAI's and Anthropic's completion endpoints, OpenAI's
embeddings (checked and answered by ``embeddings.py``), their batch APIs (``batches.py``), plus
``/_sim/*`` controls. The modules it routes to never import it back.

A request passes, in order: auth, required headers, body checks (flex for a model without it
is refused here), quota, fault injection (then flex's capacity dice), its answer drafted
(``reply.py``: packed or not, what it reads from the prompt cache), the rate limiter, then
sleeps its latency (times ``flex_slowdown`` under flex) and answers; only then does the prompt
cache keep its prefixes. One pipeline serves both APIs; a
``Dialect`` supplies the wire format. Everything lives on one event loop, so the state below
needs no locks; ``Simulator`` calls ``reset``/``configure`` on that loop.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import embeddings
from .answers import is_structured, prompt_sha
from .anthropic import Messages
from .batches import BatchDesk
from .config import SimConfig
from .dialect import ChatCompletions, Dialect
from .faults import pick_fault, reset_connection
from .limits import RateLimiter
from .log import RequestLog
from .reply import Replier
from .responses import SERVER_ERRORS, error_body, flex_unavailable, mask_header, models_body
from .tokens import count_prompt_tokens
from .validate import Invalid

Entry = dict[str, Any]
_Handler = Callable[[web.Request, Entry], Awaitable[web.StreamResponse]]

OPENAI = ChatCompletions()
ANTHROPIC = Messages()
_LIMIT_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
_RETRY_HEADERS = ("retry-after", "retry-after-ms")


class SimServer:
    """The simulated provider: its config, rate limiter, fault dice and request log."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.log = RequestLog()
        self.host = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.captured: collections.deque[dict[str, Any]] = collections.deque(maxlen=0)
        # Files and batch jobs outlive reset(), as they outlive a client at the provider.
        # The prompt cache, the pack log and the count of answers are shared with batch lines.
        self.replier = Replier(lambda: self.config)
        self.batches = BatchDesk(lambda: self.config, self.replier)
        self.reset()

    # -- state -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the log, the limiter's buckets and the quota used; reseed the dice."""
        cfg = self.config
        self._start = time.monotonic()
        self._limiter = RateLimiter(cfg.rpm, cfg.tpm, cfg.burst_seconds, self._start,
                                    cfg.fixed_window_s)
        self._faults = random.Random(cfg.seed)
        self._jitter = random.Random(f"jitter-{cfg.seed}")
        self._flex_dice = random.Random(f"flex-{cfg.seed}")
        self._used = 0
        self.replier.reset()
        self.log.clear()
        self.captured = collections.deque(maxlen=cfg.capture_requests)

    def configure(self, **knobs: Any) -> SimConfig:
        """Change knobs at runtime; limits and seed changes start fresh buckets and dice."""
        old, new = self.config, self.config.replace(**knobs)
        self.config = new
        limits = ("rpm", "tpm", "burst_seconds", "fixed_window_s")
        if any(getattr(old, k) != getattr(new, k) for k in limits):
            self._limiter = RateLimiter(new.rpm, new.tpm, new.burst_seconds, time.monotonic(),
                                        new.fixed_window_s)
        if old.seed != new.seed:
            self._faults = random.Random(new.seed)
            self._jitter = random.Random(f"jitter-{new.seed}")
            self._flex_dice = random.Random(f"flex-{new.seed}")
        if old.capture_requests != new.capture_requests:
            self.captured = collections.deque(self.captured, maxlen=new.capture_requests)
        return new

    def stats(self) -> dict[str, Any]:
        """Counts by status and fault, in-flight figures, the quota used so far, chat/messages
        answers (``answered``, batch lines included), ``prompt_cache`` totals over them
        (prompt_tokens, cached_tokens, cache_write_tokens) and ``packed`` totals (requests,
        rows_sent, rows_answered, dropped, duplicated, invented)."""
        return self.log.stats() | {
            "quota_used": self._used,
            "answered": self.replier.answered,
            "prompt_cache": dict(self.replier.cache.totals),
            "packed": self.replier.packs.stats(),
        }

    # -- lifecycle ---------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The routes; anything else gets OpenAI's JSON 404 rather than aiohttp's text one."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._tracked(self._chat))
        app.router.add_post("/v1/messages", self._tracked(self._messages))
        app.router.add_post("/v1/embeddings", self._tracked(self._embeddings))
        app.router.add_get("/v1/models", self._tracked(self._models))
        desk, oa, an = self.batches, self._openai_auth, self._anthropic_auth
        app.router.add_post("/v1/files", self._tracked(oa(desk.upload)))
        app.router.add_get("/v1/files/{file_id}", self._tracked(oa(desk.file)))
        app.router.add_get("/v1/files/{file_id}/content", self._tracked(oa(desk.file_content)))
        app.router.add_post("/v1/batches", self._tracked(oa(desk.openai_create)))
        app.router.add_get("/v1/batches", self._tracked(oa(desk.openai_list)))
        app.router.add_get("/v1/batches/{batch_id}", self._tracked(oa(desk.openai_get)))
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._tracked(oa(desk.openai_cancel)))
        app.router.add_post("/v1/messages/batches", self._tracked(an(desk.anthropic_create)))
        app.router.add_get("/v1/messages/batches/{batch_id}", self._tracked(an(desk.anthropic_get)))
        app.router.add_get("/v1/messages/batches/{batch_id}/results",
                           self._tracked(an(desk.anthropic_results)))
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel",
                            self._tracked(an(desk.anthropic_cancel)))
        app.router.add_get("/_sim/batches", self._get_batches)
        app.router.add_get("/_sim/log", self._get_log)
        app.router.add_get("/_sim/packs", self._get_packs)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_get("/_sim/requests", self._get_requests)
        app.router.add_post("/_sim/reset", self._post_reset)
        app.router.add_get("/_sim/config", self._get_config)
        app.router.add_post("/_sim/config", self._post_config)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0 picks a free port, read back into ``self.port``)."""
        self._runner = web.AppRunner(
            self.make_app(),
            access_log=None,  # a log line per request would cost more than the request
            handler_cancellation=True,  # a client that hangs up ends its handler
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=4096, reuse_address=True)
        await site.start()
        self.host, self.port = host, self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Cancel every request still in progress (hangs included), then close."""
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- /v1 ---------------------------------------------------------------------------

    def _tracked(self, handler: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Count the request in flight, make it cancellable on stop, and log how it ended."""

        async def run(request: web.Request) -> web.StreamResponse:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            self.log.started()
            entry: Entry = {
                "t": round(time.monotonic() - self._start, 6),
                "path": sys.intern(request.path),  # interned: 100k entries share one string
                "model": None,
                "prompt_sha": None,
                "status": None,  # stays None when no response is sent (hang cut short, reset)
                "fault": None,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "finish_reason": None,  # of an answer: "stop", or "length" when cut at max_tokens
            }
            try:
                if self.captured.maxlen:
                    await self._capture(request)
                response = await handler(request, entry)
                self._hide_limits(response)
                entry["status"] = None if entry["fault"] == "reset" else response.status
                return response
            finally:
                if task is not None:
                    self._tasks.discard(task)
                self.log.finished(entry, self.config.log)

        return run

    def _hide_limits(self, response: web.StreamResponse) -> None:
        """Drop what this server is configured not to tell (``rate_limit_headers``,
        ``retry_after_on_429``). Done once here, on the way out, so every route (chat,
        messages, embeddings) and every 429 (limiter or fault) follows the same knobs."""
        cfg = self.config
        if (cfg.rate_limit_headers and cfg.retry_after_on_429) or response.prepared:
            return
        headers = response.headers
        if not cfg.rate_limit_headers:
            for name in [k for k in headers if k.lower().startswith(_LIMIT_HEADER_PREFIXES)]:
                headers.popall(name, None)
        if not cfg.retry_after_on_429 and response.status == 429:
            for name in _RETRY_HEADERS:
                headers.popall(name, None)

    async def _capture(self, request: web.Request) -> None:
        """Keep the request's headers (secrets masked) and body, for comparing clients."""
        raw = await request.read()  # aiohttp keeps it: the handler reads it again for free
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw[:2000].decode("utf-8", "replace")
        headers = {k.lower(): mask_header(k.lower(), v) for k, v in request.headers.items()}
        self.captured.append(
            {"method": request.method, "path": request.path, "headers": headers, "body": body}
        )

    def _openai_auth(self, handler: _Handler) -> _Handler:
        async def checked(request: web.Request, entry: Entry) -> web.StreamResponse:
            return OPENAI.denied(request.headers, self.config.api_key) or await handler(request, entry)

        return checked

    def _anthropic_auth(self, handler: _Handler) -> _Handler:
        async def checked(request: web.Request, entry: Entry) -> web.StreamResponse:
            refused = ANTHROPIC.denied(request.headers, self.config.api_key) or ANTHROPIC.bad_headers(
                request.headers)
            return refused or await handler(request, entry)

        return checked

    async def _models(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        denied = OPENAI.denied(request.headers, self.config.api_key)
        return denied or web.json_response(models_body(self.config.models))

    async def _chat(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        return await self._complete(request, entry, OPENAI)

    async def _messages(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        return await self._complete(request, entry, ANTHROPIC)

    async def _complete(
        self, request: web.Request, entry: Entry, dialect: Dialect
    ) -> web.StreamResponse:
        cfg = self.config
        if denied := dialect.denied(request.headers, cfg.api_key):
            return denied
        if refused := dialect.bad_headers(request.headers):
            return refused
        try:
            body = await request.json()
        except ValueError:
            return dialect.not_json()
        if invalid := dialect.invalid(body):
            return invalid
        model, messages = body["model"], dialect.messages(body)
        entry["model"] = sys.intern(model)
        entry["prompt_sha"] = sha = prompt_sha(messages)
        entry["prompt_tokens"] = prompt_tokens = count_prompt_tokens(messages)
        if body.get("stream"):
            return dialect.error(400, "streaming not supported by the simulator", param="stream")
        if cfg.unknown_model_404 and model not in cfg.models:
            return dialect.error(404, f"The model `{model}` does not exist or you do not have "
                                 "access to it.", code="model_not_found")
        if cfg.quota_requests is not None and self._used >= cfg.quota_requests:
            return dialect.out_of_quota()

        flex = dialect is OPENAI and body.get("service_tier") == "flex"
        if flex and model not in cfg.flex_models:
            return dialect.error(400, f"Invalid value for 'service_tier': flex processing is not "
                                 f"available for model '{model}'.", param="service_tier",
                                 code="invalid_value")
        response_format = dialect.response_format(body)
        structured = is_structured(response_format)
        entry["fault"] = fault = pick_fault(self._faults, cfg, structured=structured)
        if fault == "hang":
            await asyncio.sleep(cfg.hang_seconds)  # then carry on: a very slow success
        elif fault is not None and fault != "invalid_json":  # that one breaks the answer below
            return self._fault(fault, request, cfg, dialect)
        if flex:
            entry["service_tier"] = "flex"
            if cfg.fault_flex_429 > 0 and self._flex_dice.random() < cfg.fault_flex_429:
                entry["fault"] = "flex_429"
                return flex_unavailable(dialect.limit_headers(self._limiter, time.monotonic()))

        max_tokens = dialect.max_tokens(body)
        now = time.monotonic()
        draft = self.replier.draft(dialect.api, body, messages, response_format, max_tokens, now,
                                   invalid=fault == "invalid_json", sha=sha,
                                   prompt_tokens=prompt_tokens)
        answer = draft.answer
        # Like OpenAI, the tokens limit is charged up front with prompt + max_tokens.
        estimate = prompt_tokens + (answer.completion_tokens if max_tokens is None else max_tokens)
        if refusal := self._limiter.acquire(estimate, now, model):
            headers = dialect.limit_headers(self._limiter, now)
            headers |= dialect.retry_headers(refusal.retry_after)
            return dialect.rate_limited(refusal, headers)
        headers = dialect.limit_headers(self._limiter, now)
        self._used += 1
        slow = cfg.flex_slowdown if flex else 1.0
        await asyncio.sleep(self._latency(cfg, answer.completion_tokens) * slow)
        entry["completion_tokens"] = answer.completion_tokens
        entry["finish_reason"] = answer.finish_reason
        self.replier.deliver(draft, time.monotonic(), entry, path=entry["path"])
        if cfg.response_cost_per_mtok is not None:  # a gateway reporting its bill (LiteLLM)
            tokens = prompt_tokens + answer.completion_tokens
            headers["x-litellm-response-cost"] = str(tokens * cfg.response_cost_per_mtok / 1e6)
        return web.json_response(dialect.answer(draft), headers=headers)

    async def _embeddings(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        """The chat pipeline's steps, in its order, for an embeddings request."""
        cfg, dialect = self.config, OPENAI
        if denied := dialect.denied(request.headers, cfg.api_key):
            return denied
        try:
            body = await request.json()
        except ValueError:
            return dialect.not_json()
        checked = embeddings.check(body)
        if isinstance(checked, Invalid):
            return dialect.error(400, checked.message, param=checked.param, code=checked.code)
        model, texts, tokens, dims, fmt = checked
        entry["model"] = sys.intern(model)
        entry["prompt_sha"] = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
        entry["prompt_tokens"] = tokens
        entry["inputs"] = len(texts)
        if cfg.quota_requests is not None and self._used >= cfg.quota_requests:
            return dialect.out_of_quota()
        entry["fault"] = fault = pick_fault(self._faults, cfg)
        if fault == "hang":
            await asyncio.sleep(cfg.hang_seconds)
        elif fault is not None:
            return self._fault(fault, request, cfg, dialect)
        now = time.monotonic()
        if refusal := self._limiter.acquire(tokens, now, model):
            headers = dialect.limit_headers(self._limiter, now) | dialect.retry_headers(refusal.retry_after)
            return dialect.rate_limited(refusal, headers)
        headers = dialect.limit_headers(self._limiter, now)
        self._used += 1
        await asyncio.sleep(self._latency(cfg, 0))
        return web.Response(body=embeddings.response_body(model, texts, tokens, dims, fmt),
                            content_type="application/json", headers=headers)

    def _latency(self, cfg: SimConfig, completion_tokens: int) -> float:
        seconds = cfg.ttft_ms / 1000
        if cfg.tokens_per_s > 0:
            seconds += completion_tokens / cfg.tokens_per_s
        if cfg.jitter_ms > 0:
            seconds += self._jitter.uniform(0, cfg.jitter_ms) / 1000
        return seconds

    def _fault(
        self, fault: str, request: web.Request, cfg: SimConfig, dialect: Dialect
    ) -> web.StreamResponse:
        headers = dialect.limit_headers(self._limiter, time.monotonic())
        if fault == "429":
            return dialect.fault_429(headers | dialect.retry_headers(cfg.fault_retry_after_s))
        if fault == "5xx":
            return dialect.server_error(self._faults.choice(sorted(SERVER_ERRORS)), headers)
        if fault == "529":
            return dialect.overloaded(headers)
        if fault == "malformed":
            return web.Response(
                body=dialect.malformed, content_type="application/json", headers=headers
            )
        reset_connection(request)
        return web.Response(status=500)  # never sent: the socket is already gone

    # -- /_sim -------------------------------------------------------------------------

    async def _get_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.log.entries)

    async def _get_packs(self, request: web.Request) -> web.Response:
        return web.json_response(self.replier.packs.records)

    async def _get_batches(self, request: web.Request) -> web.Response:
        return web.json_response(self.batches.summary())

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _get_requests(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.captured))

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config.public_dict())

    async def _post_config(self, request: web.Request) -> web.Response:
        try:
            knobs = await request.json()
            if not isinstance(knobs, dict):
                raise TypeError("expected a JSON object of knobs")
            config = self.configure(**knobs)
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))
        return web.json_response(config.public_dict())

    async def _not_found(self, request: web.Request) -> web.Response:
        return _error(404, f"Invalid URL ({request.method} {request.path})")


async def serve(
    config: SimConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the simulator on the current loop until cancelled; on_ready gets its base URL."""
    server = SimServer(config)
    await server.start(host, port)
    try:
        if on_ready is not None:
            shown = f"[{host}]" if ":" in host else host
            on_ready(f"http://{shown}:{server.port}/v1")
        await asyncio.Event().wait()
    finally:
        await server.stop()


def _error(status: int, message: str) -> web.Response:
    """OpenAI's error envelope, for the control routes and unknown paths."""
    return web.json_response(error_body(message), status=status)
