"""The kernel's journal of runs: every ``apply``/``aapply``/``embed`` that ran and every
background job (``submit``) of this process, for ``%llm_runs`` and its total spend.

It lives in the core because the runs are recorded by the top-level modules (``frames.remember``
for calls that return, ``jobs.Job`` for background jobs, which record themselves when they start
and again when they end) and read by the UI (``ui.magics``), and both may import the core.

An entry is recorded per report (a ``model=[...]`` call records one per model) and keyed by the
report itself: recording the same report again updates its status instead of adding a run, so
a job's result read later (which goes through ``frames.remember`` too) stays one job. The
figures (rows, dollars, wall time) are read from the report when ``entries()`` is called, so a
running job's entry shows how far it has got.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from .figures import not_sent
from .figures import status as run_status

Kind = Literal["run", "job"]


@dataclass(frozen=True)
class Entry:
    """One run as ``%llm_runs`` shows it (a snapshot: figures as of ``entries()``)."""

    kind: Kind
    model: str
    rows: int
    answered: int
    failed: int  # rows that failed: not those skipped, nor those never sent
    not_sent: int
    dollars: float
    wall_s: float | None
    status: str
    report: Any  # the RunReport
    started: float  # time.time() when it was recorded first
    skipped: int = 0  # rows not sent for a missing value or a prompt too long


@dataclass
class _Record:
    kind: Kind
    report: Any
    status: str | None  # None: read from the report (done, failed, stopped, interrupted ...)
    started: float


_lock = threading.Lock()  # a job records from the engine's loop thread
_records: list[_Record] = []


def _reports(report: Any) -> list[Any]:
    """A RunReports (``model=[...]``) is one entry per model."""
    return list(report) if isinstance(report, list) else [report]


def record(report: Any, kind: Kind = "run", status: str | None = None) -> None:
    """Add ``report``'s run (or each model's, for a RunReports), or update its status if it is
    there already as the same kind (a job's result, remembered as a run once read, stays the
    job's entry). ``status=None``: the status is read from the report whenever the journal is
    read."""
    now = time.time()
    with _lock:
        for one in _reports(report):
            found = next((r for r in _records if r.report is one), None)
            if found is None:
                _records.append(_Record(kind, one, status, now))
            elif found.kind == kind:  # a job's result read later does not change what it says
                found.status = status


def forget(report: Any) -> None:
    """Drop ``report``'s entry (a call that sent nothing and was no run of the user's: the
    pandas call a Dask ``apply`` makes on its frame's empty ``_meta`` to check the options)."""
    with _lock:
        _records[:] = [r for r in _records if all(r.report is not one for one in _reports(report))]


def _entry(rec: _Record) -> Entry:
    r = rec.report
    stats = r.stats
    accounting = getattr(r, "accounting", None)
    if callable(accounting):  # rows = answered + failed + skipped + not sent, each apart
        acc = accounting()
        answered, failed = acc.answered, sum(acc.failed.values())
        skipped, unsent = sum(acc.skipped.values()), sum(acc.not_sent.values())
    else:  # failed_rows counts the rows skipped and never sent as well
        unsent, skipped = not_sent(r), int(getattr(r, "skipped", 0) or 0)
        answered, failed = r.answered_rows, r.failed_rows - unsent - skipped
    wall = stats.elapsed if stats.started is not None else None
    status = rec.status or run_status(r, final=True)[0]
    return Entry(kind=rec.kind, model=str(r.model), rows=int(r.rows), answered=int(answered),
                 failed=int(failed), not_sent=int(unsent), dollars=float(r.cost or 0.0),
                 wall_s=wall, status=status, report=r, started=rec.started, skipped=int(skipped))


def entries() -> list[Entry]:
    """Every run of this process so far, oldest first."""
    with _lock:
        records = list(_records)
    return [_entry(rec) for rec in records]


def total_spend() -> float:
    """Dollars spent by every run of this process (as the runs counted them)."""
    return sum(e.dollars for e in entries())


def clear() -> None:
    """Forget every entry (``%llm_runs --clear``)."""
    with _lock:
        _records.clear()


__all__ = ["Entry", "clear", "entries", "record", "total_spend"]
