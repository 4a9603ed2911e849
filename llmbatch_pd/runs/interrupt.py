"""Ctrl+C during awaited runs: cancel them (keeping finished rows) instead of escaping the
event loop."""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any


class CancelOnSigint:
    """While awaited runs are going, Ctrl+C cancels them (keeping finished rows) instead of
    escaping the event loop and leaving them suspended, as IPython's autoawait would.

    One hook serves every awaited run on the loop: the first run installs it (saving the
    handler it replaces), Ctrl+C cancels them all, and the last run to end puts the saved
    handler back. A loop that already has its own SIGINT handler is left alone.
    """

    _runs: set[CancelOnSigint] = set()
    _hook: tuple[asyncio.AbstractEventLoop, Any] | None = None  # (loop, handler it replaced)

    def __init__(self, task: asyncio.Task | None) -> None:
        self.fired = False
        self._task = task
        if task is None or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        cls = type(self)
        if cls._hook is None:
            if signal.SIGINT in getattr(loop, "_signal_handlers", {}):
                return  # the application handles Ctrl+C on this loop itself
            previous = signal.getsignal(signal.SIGINT)
            try:
                loop.add_signal_handler(signal.SIGINT, cls._fire_all)
            except (NotImplementedError, RuntimeError, ValueError):
                return
            cls._hook = (loop, previous)
        elif cls._hook[0] is not loop:
            return
        cls._runs.add(self)

    @classmethod
    def _fire_all(cls) -> None:
        for run in list(cls._runs):
            run.fired = True
            run._task.cancel()

    def restore(self) -> None:
        cls = type(self)
        if self not in cls._runs:
            return
        cls._runs.discard(self)
        if not cls._runs and cls._hook is not None:
            loop, previous = cls._hook
            cls._hook = None
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
