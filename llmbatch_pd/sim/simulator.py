"""``Simulator``: run the simulated provider beside a test or a benchmark, and drive it.

Three ways to run it, one set of controls:

- ``with Simulator()``: the server gets its own event loop on a background thread, so it
  works from plain code, pytest and notebooks alike (their own loop is left alone);
- ``async with Simulator()``: the server runs on the caller's event loop;
- ``Simulator(process=True)``: a ``python -m llmbatch_pd.sim`` subprocess, so benchmarks
  do not measure the simulator's CPU on the client's GIL; controls go over ``/_sim/*``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from .config import SimConfig
from .server import SimServer

CONFIG_ENV = "LLMBATCH_SIM_CONFIG"
"""Environment variable carrying the JSON config to a subprocess (keeps the key off argv)."""

_T = TypeVar("_T")


class Simulator:
    """A loopback OpenAI- and Anthropic-compatible provider with latency, rate limits and faults.

    >>> with Simulator(fault_429=0.05, rpm=600) as sim:  # doctest: +SKIP
    ...     client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test")
    ...     claude = anthropic.Anthropic(base_url=sim.anthropic_url, api_key="sk-test")
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        process: bool = False,
        **overrides: Any,
    ) -> None:
        self._config = (config or SimConfig()).replace(**overrides)
        self.host = host
        self.port = port  # the real one once started
        self.process = process
        self._wanted_port = port
        self._mode: str | None = None  # "thread", "async" or "process" once started
        self._server: SimServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: Any = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url``: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.root_url}/v1"

    @property
    def anthropic_url(self) -> str:
        """What an Anthropic client takes as ``base_url``: the root, as its paths start
        with ``/v1`` (``POST /v1/messages``)."""
        return self.root_url

    @property
    def config(self) -> SimConfig:
        return self._config

    # -- sync lifecycle ----------------------------------------------------------------

    def start(self) -> Simulator:
        """Start in a background thread, or in a subprocess when ``process=True``."""
        if self._mode is not None:
            raise RuntimeError("Simulator already started")
        if self.process:
            self._start_process()
        else:
            self._start_thread()
        return self

    def stop(self) -> None:
        """Stop the server; requests still in progress (hangs too) are cut off."""
        if self._mode == "thread":
            assert self._loop and self._thread and self._stop_event
            self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join()
        elif self._mode == "process":
            self._stop_process()
        elif self._mode == "async":
            raise RuntimeError("a Simulator started with 'async with' stops with it")
        self._mode = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- async lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        if self._mode is not None:
            raise RuntimeError("Simulator already started")
        if self.process:
            await asyncio.to_thread(self._start_process)
            return self
        self._server = SimServer(self._config)
        await self._server.start(self.host, self._wanted_port)
        self.port, self._mode = self._server.port, "async"
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._mode == "process":
            await asyncio.to_thread(self._stop_process)
        elif self._server is not None:
            await self._server.stop()
        self._mode = None

    # -- controls ----------------------------------------------------------------------

    @property
    def log(self) -> list[dict[str, Any]]:
        """One dict per request: t, path, model, prompt_sha, status, fault, token counts,
        finish_reason ("length": the answer was cut at max_tokens).
        A batch job's creation also carries ``batch`` (its id) and ``batch_requests``; an
        answered chat/messages request that read from or wrote to the prompt cache
        ``cached_tokens`` / ``cache_write_tokens`` (absent when 0); a packed one ``pack_ids_sent`` / ``pack_ids_answered``; a flex
        one ``service_tier`` ("flex"; fault "flex_429" when refused for capacity)."""
        if self._mode == "process":
            entries: list[dict[str, Any]] = self._http("GET", "/_sim/log")
            return entries
        return self._require_server().log.entries

    @property
    def packs(self) -> list[dict[str, Any]]:
        """One dict per packed request answered (``packing.py``), real-time and batch lines
        alike: ``ids_sent`` and ``ids_answered`` (as a client reads them from the answer, in its
        order, duplicates and unknown ids included), and where it came from: ``path``, or
        ``batch`` and ``custom_id``. The request log's entries of packed requests carry the
        same two lists as ``pack_ids_sent`` / ``pack_ids_answered``."""
        if self._mode == "process":
            packs: list[dict[str, Any]] = self._http("GET", "/_sim/packs")
            return packs
        server = self._require_server()
        return self._on_loop(lambda: list(server.replier.packs.records))

    @property
    def captured(self) -> list[dict[str, Any]]:
        """The last ``capture_requests`` requests as received: method, path, headers
        (lower-cased, credentials masked but their scheme kept) and JSON body."""
        if self._mode == "process":
            captured: list[dict[str, Any]] = self._http("GET", "/_sim/requests")
            return captured
        return self._on_loop(lambda: list(self._require_server().captured))

    @property
    def batches(self) -> list[dict[str, Any]]:
        """One dict per batch job created (either API): id, api, requests, model, status."""
        if self._mode == "process":
            jobs: list[dict[str, Any]] = self._http("GET", "/_sim/batches")
            return jobs
        server = self._require_server()
        return self._on_loop(server.batches.summary)

    def stats(self) -> dict[str, Any]:
        """Totals by status and by fault, requests in flight and the most seen at once."""
        if self._mode == "process":
            stats: dict[str, Any] = self._http("GET", "/_sim/stats")
            return stats
        return self._on_loop(self._require_server().stats)

    def reset(self) -> None:
        """Clear the log, counters, quota used and rate-limit buckets; reseed the faults."""
        if self._mode == "process":
            self._http("POST", "/_sim/reset")
        else:
            server = self._require_server()
            self._on_loop(server.reset)

    def configure(self, **knobs: Any) -> SimConfig:
        """Change knobs while running, e.g. ``sim.configure(fault_5xx=0.1, rpm=None)``."""
        config = self._config.replace(**knobs)  # validate here, before anything is sent
        if self._mode == "process":
            self._http("POST", "/_sim/config", knobs)
        elif self._mode is not None:
            server = self._require_server()
            self._on_loop(lambda: server.configure(**knobs))
        self._config = config
        return config

    def __repr__(self) -> str:
        return f"<Simulator {self._mode} {self.base_url}>" if self._mode else "<Simulator stopped>"

    # -- thread mode -------------------------------------------------------------------

    def _start_thread(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop_event = asyncio.Event()
            server = SimServer(self._config)
            try:
                await server.start(self.host, self._wanted_port)
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            self._server, self.port = server, server.port
            ready.set()
            try:
                await self._stop_event.wait()
            finally:
                await server.stop()

        self._thread = threading.Thread(
            target=asyncio.run, args=(main(),), name="llmbatch-sim", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        self._mode = "thread"

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run fn on the server's loop: its state is only touched from there."""
        if self._mode != "thread" or threading.current_thread() is self._thread:
            return fn()
        assert self._loop is not None

        async def call() -> _T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result()

    def _require_server(self) -> SimServer:
        """The in-process server; its log and stats stay readable after it stops."""
        if self._server is None:
            raise RuntimeError("Simulator has not been started")
        return self._server

    # -- process mode ------------------------------------------------------------------

    def _start_process(self) -> None:
        env = dict(os.environ)
        env[CONFIG_ENV] = json.dumps(self._config.to_dict())
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._proc = subprocess.Popen(
            [*_cli_command(), "--host", self.host, "--port", str(self._wanted_port)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        weakref.finalize(self, self._proc.kill)  # no orphan if stop() is never called
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http"):
            self._proc.wait(timeout=10)
            self._stderr.seek(0)
            detail = self._stderr.read().strip()
            self._stop_process()
            raise RuntimeError(f"simulator subprocess failed to start: {detail or line}")
        self.port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
        self._mode = "process"

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _http(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.root_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def _cli_command() -> list[str]:
    """``python -m llmbatch_pd.sim``, minus the import of the parent package.

    Importing ``llmbatch_pd`` pulls in pandas and the engine, doubling the start-up time;
    the simulator needs none of it, so it is loaded on its own under another name.
    """
    here = Path(__file__).resolve().parent
    boot = (
        "import importlib.util as u, sys\n"
        f"s = u.spec_from_file_location('_llmbatch_sim', {str(here / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(here)!r}])\n"
        "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m)\n"
        "from _llmbatch_sim.__main__ import main; main()\n"
    )
    return [sys.executable, "-c", boot]
