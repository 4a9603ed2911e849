"""The simulator's aiohttp application: OpenAI's chat endpoint plus ``/_sim/*`` controls.

A request passes, in order: auth, body checks, quota, fault injection, the rate limiter,
then sleeps its latency and answers. Everything lives on one event loop, so the state
below needs no locks; ``Simulator`` calls ``reset``/``configure`` on that loop.
"""

from __future__ import annotations

import asyncio
import math
import random
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .answers import make_answer, prompt_sha
from .config import SimConfig
from .faults import pick_fault
from .limits import RateLimiter
from .log import RequestLog
from .responses import (
    MALFORMED,
    OVERLOADED,
    QUOTA_MESSAGE,
    SERVER_ERRORS,
    bad_key_body,
    completion_body,
    error_body,
    models_body,
)
from .tokens import count_prompt_tokens
from .validate import check_chat

Entry = dict[str, Any]
_Handler = Callable[[web.Request, Entry], Awaitable[web.StreamResponse]]

_NOT_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


class SimServer:
    """The simulated provider: its config, rate limiter, fault dice and request log."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.log = RequestLog()
        self.host = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.reset()

    # -- state -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the log, the limiter's buckets and the quota used; reseed the dice."""
        cfg = self.config
        self._start = time.monotonic()
        self._limiter = RateLimiter(cfg.rpm, cfg.tpm, cfg.burst_seconds, self._start)
        self._faults = random.Random(cfg.seed)
        self._jitter = random.Random(f"jitter-{cfg.seed}")
        self._used = 0
        self.log.clear()

    def configure(self, **knobs: Any) -> SimConfig:
        """Change knobs at runtime; limits and seed changes start fresh buckets and dice."""
        old, new = self.config, self.config.replace(**knobs)
        self.config = new
        if (old.rpm, old.tpm, old.burst_seconds) != (new.rpm, new.tpm, new.burst_seconds):
            self._limiter = RateLimiter(new.rpm, new.tpm, new.burst_seconds, time.monotonic())
        if old.seed != new.seed:
            self._faults = random.Random(new.seed)
            self._jitter = random.Random(f"jitter-{new.seed}")
        return new

    def stats(self) -> dict[str, Any]:
        """Counts by status and fault, in-flight figures, and the quota used so far."""
        return self.log.stats() | {"quota_used": self._used}

    # -- lifecycle ---------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The routes; anything else gets OpenAI's JSON 404 rather than aiohttp's text one."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._tracked(self._chat))
        app.router.add_get("/v1/models", self._tracked(self._models))
        app.router.add_get("/_sim/log", self._get_log)
        app.router.add_get("/_sim/stats", self._get_stats)
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
            }
            try:
                response = await handler(request, entry)
                entry["status"] = None if entry["fault"] == "reset" else response.status
                return response
            finally:
                if task is not None:
                    self._tasks.discard(task)
                self.log.finished(entry, self.config.log)

        return run

    async def _models(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        return self._auth_error(request) or web.json_response(models_body(self.config.models))

    async def _chat(self, request: web.Request, entry: Entry) -> web.StreamResponse:
        cfg = self.config
        if denied := self._auth_error(request):
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _error(400, _NOT_JSON)
        if problem := check_chat(body):
            return _error(400, problem.message, param=problem.param, code=problem.code)
        model, messages = body["model"], body["messages"]
        entry["model"] = sys.intern(model)
        entry["prompt_sha"] = sha = prompt_sha(messages)
        entry["prompt_tokens"] = prompt_tokens = count_prompt_tokens(messages)
        if body.get("stream"):
            return _error(400, "streaming not supported by the simulator", param="stream")
        if cfg.quota_requests is not None and self._used >= cfg.quota_requests:
            return _error(429, QUOTA_MESSAGE, "insufficient_quota", code="insufficient_quota")

        entry["fault"] = fault = pick_fault(self._faults, cfg)
        if fault == "hang":
            await asyncio.sleep(cfg.hang_seconds)  # then carry on: a very slow success
        elif fault is not None:
            return self._fault(fault, request, cfg)

        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        answer = make_answer(
            messages,
            model,
            answer_tokens=cfg.answer_tokens,
            max_tokens=max_tokens,
            response_format=body.get("response_format"),
            sha=sha,
        )
        now = time.monotonic()
        # Like OpenAI, the tokens limit is charged up front with prompt + max_tokens.
        estimate = prompt_tokens + (max_tokens or answer.completion_tokens)
        if refusal := self._limiter.acquire(estimate, now, model):
            headers = self._limiter.headers(now) | _retry_headers(refusal.retry_after)
            return _error(
                429, refusal.message, refusal.kind, code="rate_limit_exceeded", headers=headers
            )
        headers = self._limiter.headers(now)
        self._used += 1
        await asyncio.sleep(self._latency(cfg, answer.completion_tokens))
        entry["completion_tokens"] = answer.completion_tokens
        return web.json_response(completion_body(model, answer, prompt_tokens), headers=headers)

    def _latency(self, cfg: SimConfig, completion_tokens: int) -> float:
        seconds = cfg.ttft_ms / 1000
        if cfg.tokens_per_s > 0:
            seconds += completion_tokens / cfg.tokens_per_s
        if cfg.jitter_ms > 0:
            seconds += self._jitter.uniform(0, cfg.jitter_ms) / 1000
        return seconds

    def _auth_error(self, request: web.Request) -> web.Response | None:
        expected = self.config.api_key
        if expected is None:
            return None
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key.strip() == expected:
            return None
        return web.json_response(bad_key_body(key.strip() or None), status=401)

    def _fault(self, fault: str, request: web.Request, cfg: SimConfig) -> web.StreamResponse:
        headers = self._limiter.headers(time.monotonic())
        if fault == "429":
            message = "Rate limit reached for requests (simulated fault). Please try again later."
            headers |= _retry_headers(cfg.fault_retry_after_s)
            return _error(429, message, "requests", code="rate_limit_exceeded", headers=headers)
        if fault == "5xx":
            status = self._faults.choice(sorted(SERVER_ERRORS))
            return _error(status, SERVER_ERRORS[status], "server_error", headers=headers)
        if fault == "529":
            return web.json_response(OVERLOADED, status=529, headers=headers)
        if fault == "malformed":
            return web.Response(body=MALFORMED, content_type="application/json", headers=headers)
        _reset_connection(request)
        return web.Response(status=500)  # never sent: the socket is already gone

    # -- /_sim -------------------------------------------------------------------------

    async def _get_log(self, request: web.Request) -> web.Response:
        return web.json_response(self.log.entries)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

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


def _error(
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


def _retry_headers(seconds: float) -> dict[str, str]:
    """``retry-after`` in whole seconds (rounded up) and ``retry-after-ms`` to the ms."""
    if seconds == float("inf"):
        return {}
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, round(seconds * 1000))),
    }


def _reset_connection(request: web.Request) -> None:
    """Drop the TCP connection with an RST, as a crashed proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
