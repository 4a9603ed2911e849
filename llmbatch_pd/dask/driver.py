"""The driver's side of a ``ddf.llm.apply`` run: the one writer of the cache file, the report
and the progress display, all fed from the run's coordinator.

``apply`` returns a lazy frame, so nothing here waits for a ``compute()``: a ``Driver`` thread
starts with the run (when ``apply`` is called) and every ``POLL`` seconds

- drains the answers the partitions reported (``coordinator.take_answers``) into the cache
  file through its writer thread (``store.writer``: the driver is the file's only writer; a
  worker never opens it);
- reads the coordinator's counters (answered, failed, 429s, dollars, in flight, stop) into the
  run's ``RunReport`` and refreshes the display (the notebook panel or a tqdm bar) from this one
  thread;
- reads the partitions' end events (``Worker.log_event`` on the topic ``partition.topic``).

Once every partition has ended (or the run was stopped run-wide and is quiet: a compute that
raised never runs its other partitions) it drains the last answers, folds the partitions' figures into
the report (exact counts: cached, duplicates, skipped, failed by reason), adds the run's
history to the cache file and closes the coordinator's run (``close_run`` frees its answers on
the scheduler). ``wait()`` blocks until then and finishes the display with the static summary
(a tqdm bar is closed by the thread itself).
A result computed again after that raises a clear error in its partitions: the run is over,
and its answers are in the cache for the next ``apply``.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import journal
from ..core.report import RunReport
from ..core.types import Usage
from ..store.db import History, Store
from .coordinator import close_run, counters, take_answers
from .embed import vector_rows
from .partition import reply_of, topic

POLL = 0.2
"""Seconds between two reads of the coordinator."""
IDLE_POLL = 0.5
"""Seconds between two reads while nothing has been sent yet (the result not computed)."""
STOP_GRACE = 2.0
"""Seconds a run stopped run-wide, with nothing in flight, waits for its partitions' ends."""
POLL_TRIES = 8
"""Reads of the coordinator that may fail in a row (backing off to 5 s) before the driver gives up."""
FLUSH_WAIT = 30.0
"""Seconds the end of a run waits for the cache file's writer."""

RUNS: dict[str, Driver] = {}
"""The runs of this process by id, for ``wait``/``report`` on a lazy result."""


class Driver:
    """One run's driver thread (see the module docstring)."""

    def __init__(self, client: Any, run_id: str, report: RunReport, *, npartitions: int,
                 cache_path: Path | None, model: str, history_key: str | None,
                 display: Any = None, price: Callable[[Usage], float] | None = None) -> None:
        self.client, self.run_id, self.report = client, run_id, report
        self.npartitions, self.cache_path, self.model = npartitions, cache_path, model
        self.history_key, self.display, self.price = history_key, display, price
        # a notebook panel's summary is left by wait(), on the cell's own thread: a display
        # update from this thread would carry the parent of the cell that called apply, which
        # nbclient (and so an exported notebook) ignores once that cell has finished
        self._widget = type(display).__name__ == "Panel"
        self.parts: dict[int, dict] = {}
        self.stored = 0  # answers handed to the cache file's writer
        self.final: dict | None = None  # the coordinator's last counters
        self.error: BaseException | None = None
        self.poll_failures = 0  # reads of the coordinator that failed in a row
        self._stop = threading.Event()
        self._done = threading.Event()
        self._store: Store | None = None
        self._closing = threading.Lock()
        RUNS[run_id] = self
        self._thread = threading.Thread(target=self._main, name=f"llmbatch-driver-{run_id[:8]}", daemon=True)
        self._thread.start()

    # -- the thread -------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            if self.cache_path is not None:
                self._store = Store(self.cache_path)
            quiet_since = None
            while not self._stop.is_set():
                counts = self._poll_again()
                if counts is None:  # the scheduler did not answer: wait a little, ask again
                    continue
                if len(self.parts) >= self.npartitions:
                    break
                # a run-wide stop (bad key, no quota, Cancel) and nothing in flight: a compute
                # that raised never runs its other partitions, so do not wait for their ends
                # so does a partition that raised an ordinary error, once no partition is open
                failed = any("error" in p for p in self.parts.values()) and not counts.get("open_partitions")
                quiet = (counts.get("stopped") is not None or failed) and not counts.get("in_flight")
                quiet_since = (quiet_since or time.monotonic()) if quiet else None
                if quiet_since is not None and time.monotonic() - quiet_since >= STOP_GRACE:
                    break
                # before the result is computed (it may never be) the scheduler is asked less often
                self._stop.wait(POLL if counts.get("partitions") or self.parts else IDLE_POLL)
            self._finish()
        except BaseException as exc:  # the client went away, the scheduler died: say so in wait()
            self.error = exc
            self.report.warnings.append(f"the driver of run {self.run_id} stopped: {exc}")
        finally:
            if self._store is not None:
                self._store.flush(FLUSH_WAIT)
                self._store.close()
            if self.parts or self.report.stats.sent:  # the run in the kernel's journal (%llm_runs)
                journal.record(self.report, "run")
            if self._widget:  # the final counts now; the summary from the thread that waits
                self._update_display()
            else:
                self._close_display()
            self._done.set()

    def _poll_again(self) -> dict | None:
        """``_poll``, a transient failure (the scheduler busy or briefly unreachable) retried
        ``POLL_TRIES`` times with a growing wait before the thread gives up (it raises then);
        None after a failure (the wait is done)."""
        try:
            counts = self._poll()
        except Exception as exc:
            self.poll_failures += 1
            if self.poll_failures > POLL_TRIES or getattr(self.client, "status", "running") in ("closing", "closed"):
                raise  # gave up, or the client was closed: nothing to try again with
            if self.poll_failures == 1:
                warnings.warn(f"llmbatch: run {self.run_id}: reading the coordinator failed ({exc}); "
                              "trying again", RuntimeWarning, stacklevel=1)
            self._stop.wait(min(POLL * 2 ** self.poll_failures, 5.0))
            return None
        self.poll_failures = 0
        return counts

    def _poll(self) -> dict:
        self._drain()
        counts = counters(self.client, self.run_id)
        self._count(counts)
        for _, event in self.client.get_events(topic(self.run_id)):
            if isinstance(event, dict) and event.get("partition") is not None:
                self.parts[event["partition"]] = event  # a re-run partition: its last end counts
        self._update_display()
        return counts

    def _drain(self) -> None:
        while True:
            items = take_answers(self.client, self.run_id)
            if not items:
                return
            stats = self.report.stats
            for _, rec in items:
                stats.input_tokens += int(rec.get("input_tokens") or rec.get("tokens") or 0)
                stats.output_tokens += int(rec.get("output_tokens") or 0)
                if self.price is not None and "vector" not in rec:  # the projection's recent cost
                    stats.recent_costs.append(self.price(reply_of(rec).usage))
            if self._store is not None:
                vectors = [item for item in items if "vector" in item[1]]  # ddf.llm.embed's
                answers = [item for item in items if "vector" not in item[1]]
                if answers:
                    self._store.put_later([(key, rec.get("model") or self.model, reply_of(rec))
                                           for key, rec in answers])
                if vectors:
                    self._store.put_vectors(vector_rows(vectors, self.model))
                self.stored += len(items)

    def _count(self, c: dict) -> None:
        """The coordinator's counters into the report (live: rows of partitions still running
        count as their answered requests; a partition's exact rows come with its end)."""
        r, s = self.report, self.report.stats
        if s.started is None and (c.get("sent") or self.parts):
            s.started = time.monotonic()
        if c.get("answered", 0) > s.done:  # the sparkline's rows per second
            s.note_answered(c["answered"] - s.done)
        s.done, s.failed, s.sent = c.get("answered", 0), c.get("failed", 0), c.get("sent", 0)
        s.in_flight, s.cost = c.get("in_flight", 0), float(c.get("spent", 0.0))
        s.by_kind["429"] = c.get("rate_limited", 0)
        s.stop_reason = c.get("stopped") or s.stop_reason
        ended = list(self.parts.values())
        r.answered_rows = (sum(p.get("answered_rows", 0) for p in ended)
                           + max(0, s.done - sum(p.get("answered_requests", 0) for p in ended)))
        r.failed_rows = (sum(p.get("failed_rows", 0) for p in ended)
                         + max(0, s.failed - sum(p.get("failed_requests", 0) for p in ended)))

    def _finish(self) -> None:
        self._drain()  # every partition reported its answers before its end event: this is all
        self.final = close_run(self.client, self.run_id)
        self._count(self.final)
        parts = list(self.parts.values())
        fold(self.report, parts)
        if parts:  # the wall time of the partitions (from the first start to the last end)
            now, wall = time.monotonic(), time.time()
            self.report.stats.started = now - (wall - min(p["began"] for p in parts))
            self.report.stats.finished = now - (wall - max(p["ended"] for p in parts))
        else:
            self.report.stats.finished = time.monotonic()
        history = [p["history"] for p in self.parts.values() if p.get("history")]
        if history and self._store is not None and self.history_key:
            sums = [sum(h[i] for h in history) for i in range(5)]
            self._store.add_history_later(self.history_key, History(*sums[:4], float(sums[4])))

    # -- the display (written from this thread only) --------------------------------------------

    def _update_display(self) -> None:
        if self.display is not None:
            self.display.update()

    def _close_display(self) -> None:
        with self._closing:
            shown, self.display = self.display, None
        if shown is not None:
            shown.close()

    # -- the caller's side ------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> RunReport:
        """Block until the run has ended (every partition done, the answers in the cache file)
        and return its report; TimeoutError if it is still going after ``timeout`` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"run {self.run_id}: {len(self.parts)} of {self.npartitions} partitions "
                               "have ended (compute the result to run them)")
        self._close_display()
        if self.error is not None:
            raise RuntimeError(f"the driver of run {self.run_id} failed: {self.error}") from self.error
        return self.report

    def done(self) -> bool:
        return self._done.is_set()

    def stop(self) -> None:
        """End the thread now (the result will not be computed): close the run, keep what came."""
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(FLUSH_WAIT)


def release(run_id: str, *held: Any) -> None:
    """The lazy result of a run was dropped (``weakref.finalize`` on its partitions' job): end
    its driver thread, which drains what came, closes the run on the scheduler and forgets
    it. Never blocks (a finalizer may run on any thread, the driver's own included).
    ``held``: what lived as long as the job (the scattered hits' future), let go now."""
    gone = RUNS.pop(run_id, None)
    if gone is not None:
        gone._stop.set()


def fold(report: RunReport, parts: list[dict]) -> None:
    """The partitions' exact figures into the run's report (answers from the coordinator to a
    re-run partition are counted as answered, not as cached: they were paid in this run)."""
    def total(name: str) -> int:
        return sum(p.get(name) or 0 for p in parts)

    report.requests, report.duplicates, report.skipped = total("requests"), total("duplicates"), total("skipped")
    report.cached = max(0, total("cached") - total("known"))
    report.too_long, report.truncated = total("too_long"), total("truncated")
    report.answered_rows, report.failed_rows, report.not_sent = (
        total("answered_rows"), total("failed_rows"), total("not_sent"))
    known_cost = sum(p.get("known_cost") or 0.0 for p in parts)
    report.saved_by_cache = max(0.0, sum(p.get("saved_by_cache") or 0.0 for p in parts) - known_cost)
    report.saved_by_dedup = sum(p.get("saved_by_dedup") or 0.0 for p in parts)
    report.unsent_requests = total("unsent_requests")
    report.failed_by, report.not_sent_by = Counter(), Counter()
    stats = report.stats
    stats.total = report.rows = max(report.rows, total("rows"))
    for p in parts:
        report.failed_by.update(p.get("failed_by") or {})
        report.not_sent_by.update(p.get("not_sent_by") or {})
        report.stop_kind = report.stop_kind or p.get("stop_kind")
        if p.get("error"):  # the partition raised before its summary
            warning = f"partition {p.get('partition')} raised {p['error']}"
            if warning not in report.warnings:
                report.warnings.append(warning)
        for message, n in (p.get("errors") or {}).items():
            stats.errors[message] += n
        for warning in p.get("warnings") or ():
            if warning not in report.warnings:
                report.warnings.append(warning)
        stats.stop_reason = stats.stop_reason or p.get("stop_reason")


def driver(run_id: str) -> Driver:
    try:
        return RUNS[run_id]
    except KeyError:
        raise KeyError(f"no ddf.llm run {run_id!r} in this process") from None
