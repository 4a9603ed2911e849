"""``df.llm.submit``: a run in the background, on the engine's loop thread, that can be
started later (``confirm=True``), awaited, waited for, or cancelled."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pandas as pd

from .planning import estimate as plan
from .runs.run import RunReport, RunReports
from .transport.loop_thread import Call


class Job:
    """A run going on in the background (``df.llm.submit``): the notebook stays usable.

    It runs on the engine's own loop thread, so it keeps going while other cells run.
    ``result()`` blocks until it is done, ``await job`` waits without blocking a loop,
    ``cancel()`` stops sending and keeps every finished row.
    """

    def __init__(self, apply: Any, *, start: bool = True) -> None:
        self._apply = apply
        self._call: Call | None = None
        self._lock = threading.Lock()  # start() and cancel() may come from a click and a cell at once
        # Created here; updated from the engine's loop thread. With confirm=True the panel shows
        # Run: a click reaches the kernel once the cell that called submit() has returned.
        self._shown = apply.display(on_cancel=lambda: self._cancel("cancelled from the panel"),
                                    on_run=None if start else self.start, background=True)
        if start:
            self.start()

    @property
    def report(self) -> RunReport | RunReports:
        return self._apply.report

    @property
    def estimate(self) -> plan.Estimate:
        return self._apply.estimate

    def start(self) -> None:
        """Begin sending (with ``confirm=True`` this is what the Run button does)."""
        with self._lock:
            if self._call is None:  # once; and never after cancel()
                self._call = Call(self._main())

    async def _main(self) -> None:
        shown = self._shown
        ticker = asyncio.ensure_future(tick(shown)) if shown else None
        try:
            await self._apply._execute()
        finally:
            if ticker:
                ticker.cancel()
            if shown:
                shown.close()

    def done(self) -> bool:
        return self._call is not None and self._call.done()

    def cancel(self) -> None:
        """Stop sending; requests in flight finish and every finished row is kept. Before
        ``start()`` (``confirm=True``) nothing is ever sent."""
        self._cancel("cancelled by the user")

    def _cancel(self, reason: str) -> None:
        with self._lock:
            if self._call is None:  # never started: on the loop (it owns the panel from now on)
                self._call = Call(self._never_started(reason))
                return
        self._apply.cancel(reason)

    async def _never_started(self, reason: str) -> None:
        self._apply.close_unstarted(reason)
        if self._shown:
            self._shown.close()

    def wait(self, timeout: float | None = None) -> bool:
        if self._call is None:
            raise RuntimeError("the job has not started: call job.start() (or click Run)")
        return self._call.wait(timeout)

    def result(self, timeout: float | None = None) -> pd.DataFrame:
        """The DataFrame, once the run is done (blocks until then)."""
        if not self.wait(timeout):
            raise TimeoutError(f"the job is still running ({self.report.finished_rows} of {self.report.rows} rows)")
        self._call.result()  # re-raise what the run raised, if anything
        return self._apply.finish(stacklevel=2)

    def __await__(self):
        async def wait_here() -> pd.DataFrame:
            await asyncio.get_running_loop().run_in_executor(None, self.wait)
            return self.result()

        return wait_here().__await__()

    def __repr__(self) -> str:
        r = self.report
        state = "done" if self.done() else ("waiting to start" if self._call is None else "running")
        return f"<llmbatch_pd.Job {r.model}: {state}, {r.finished_rows}/{r.rows} rows>"


async def tick(shown, interval: float = 0.1) -> None:
    """Refresh a display while a run goes on."""
    while True:
        shown.update()
        await asyncio.sleep(interval)
