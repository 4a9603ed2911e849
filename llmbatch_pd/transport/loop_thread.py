"""Run coroutines from synchronous code, even inside a running event loop (Jupyter).

One daemon thread owns a private event loop for the whole process, as jupyter_core's
``run_sync`` and anyio's blocking portal do. The calling thread blocks on a threading event
(interruptible by Ctrl+C), so the kernel's own loop is never re-entered: no nest-asyncio.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def engine_loop() -> asyncio.AbstractEventLoop:
    """The private loop, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or not _thread or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=serve, name="llmbatch-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
        return _loop


def on_loop(fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> None:
    """Call ``fn(*args)`` on the private loop and return once it has run there (at once when
    already on it): a cancel that returns has taken effect, so nothing is sent after it."""
    loop = engine_loop()
    if threading.current_thread() is _thread:
        fn(*args)
        return
    done = threading.Event()

    def call() -> None:
        try:
            fn(*args)
        finally:
            done.set()

    loop.call_soon_threadsafe(call)
    done.wait(timeout)


class Call:
    """A coroutine running on the private loop; wait for it, or cancel it, from any thread."""

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._task: asyncio.Task | None = None
        self.loop = engine_loop()
        if threading.current_thread() is _thread:
            raise RuntimeError("cannot block the engine's own loop thread; use the async API")
        started = threading.Event()

        def start() -> None:
            self._task = self.loop.create_task(coro)
            self._task.add_done_callback(self._finished)
            started.set()

        self.loop.call_soon_threadsafe(start)
        started.wait()

    def _finished(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self._error = asyncio.CancelledError()
        elif task.exception() is not None:
            self._error = task.exception()
        else:
            self._result = task.result()
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def cancel(self) -> None:
        """Ask the task to stop; it keeps what has finished. Returns at once."""
        task = self._task
        if task is not None and not self._done.is_set():
            self.loop.call_soon_threadsafe(task.cancel)

    def result(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


def run_sync(
    coro: Coroutine[Any, Any, T],
    tick: Callable[[], None] | None = None,
    interval: float = 0.1,
) -> T:
    """Run ``coro`` on the private loop and block until it is done, calling ``tick`` every
    ``interval`` seconds on this thread (progress displays stay on one thread).

    Ctrl+C cancels the coroutine, waits for it to wind down, then re-raises.
    """
    call = Call(coro)
    try:
        while not call.wait(interval):
            if tick is not None:
                tick()
    except KeyboardInterrupt:
        call.cancel()
        call.wait(10.0)
        raise
    return call.result()
