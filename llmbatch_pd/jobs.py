"""How a call runs: blocking (``apply``), awaited (``aapply``, with Ctrl+C cancelling it and
keeping the finished rows), or in the background (``submit``: a :class:`Job` on the engine's
loop thread that can be started later, awaited, waited for, or cancelled)."""

from __future__ import annotations

import asyncio
import signal
import threading
import warnings
from typing import Any

import pandas as pd

from .core import errors, journal
from .core.report import RunReport, RunReports
from .planning import estimate as plan
from .transport.loop_thread import Call, run_sync


class Runnable:
    """Blocking and awaitable runs with a display and Ctrl+C handling, for one model or several.
    A run stopped by a fatal error (bad key, no quota, provider down) raises it, carrying the
    result; otherwise skipped and failed rows are told in one warning.

    A call (``apply`` for one model or several, ``embed``) implements the methods below that
    raise NotImplementedError."""

    _warned = False

    def display(self, *, on_cancel=None, on_run=None, background: bool = False):
        raise NotImplementedError

    async def _execute(self) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        raise NotImplementedError

    @property
    def report(self) -> RunReport | RunReports:
        raise NotImplementedError

    def progress_counts(self) -> tuple[int, int]:
        """(answered rows, rows), for the interrupted message."""
        return self.report.answered_rows, self.report.rows

    def stopped(self, result: Any) -> errors.ProviderError | None:
        """The fatal error that stopped the run, ready to raise (result attached), or None."""
        raise NotImplementedError

    def row_warning(self) -> str | None:
        raise NotImplementedError

    def finish(self, stacklevel: int = 3) -> Any:
        """The result, once the run is over: raised inside the fatal error that stopped it,
        else returned (after one warning about skipped and failed rows, if any)."""
        out = self.result()
        fatal = self.stopped(out)
        if fatal is not None:
            raise fatal
        message = None if self._warned else self.row_warning()
        if message:
            self._warned = True
            warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
        return out

    def sync(self) -> Any:
        shown = self.display()
        try:
            run_sync(self._execute(), tick=shown.update if shown else None)
        except KeyboardInterrupt:
            raise self._interrupted(self.result()) from None
        finally:
            if shown:
                shown.close()
        return self.finish(stacklevel=3)

    async def run_async(self) -> Any:
        shown = self.display()
        ticker = asyncio.ensure_future(tick(shown)) if shown else None
        interrupted = CancelOnSigint(asyncio.current_task())
        try:
            await self._execute()
        except asyncio.CancelledError:
            if not interrupted.fired:
                raise
            raise self._interrupted(self.result()) from None
        finally:
            interrupted.restore()
            if ticker:
                ticker.cancel()
            if shown:
                shown.close()
        return self.finish(stacklevel=3)

    def _interrupted(self, partial: Any) -> errors.RunInterrupted:
        answered, rows = self.progress_counts()
        return errors.RunInterrupted(
            f"interrupted: {answered} of {rows} rows had finished and are "
            "kept (llmbatch_pd.last_result() gives them)",
            result=partial,
        )


class Job:
    """A run going on in the background (``df.llm.submit``): the notebook stays usable.

    It runs on the engine's own loop thread, so it keeps going while other cells run.
    ``result()`` blocks until it is done, ``await job`` waits without blocking a loop,
    ``cancel()`` stops sending and keeps every finished row. It is in the kernel's journal
    (``%llm_runs``) from the start, its status updated when it ends.
    """

    def __init__(self, apply: Any, *, start: bool = True) -> None:
        self._apply = apply
        self._call: Call | None = None
        self._cancelled = False
        journal.record(apply.report, "job", "running" if start else "waiting to start")
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
                journal.record(self.report, "job", "running")
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
            # the status read from the report from now on (done, failed, stopped ...)
            journal.record(self.report, "job", "cancelled" if self._cancelled else None)

    def done(self) -> bool:
        return self._call is not None and self._call.done()

    def cancel(self) -> None:
        """Stop sending; requests in flight finish and every finished row is kept. Before
        ``start()`` (``confirm=True``) nothing is ever sent."""
        self._cancel("cancelled by the user")

    def _cancel(self, reason: str) -> None:
        self._cancelled = True
        with self._lock:
            if self._call is None:  # never started: on the loop (it owns the panel from now on)
                self._call = Call(self._never_started(reason))
                return
        self._apply.cancel(reason)

    async def _never_started(self, reason: str) -> None:
        self._apply.close_unstarted(reason)
        journal.record(self.report, "job", "cancelled")
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
