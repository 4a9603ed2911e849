"""Answers go to the cache file from one thread per file, never from the event loop.

Another process (a second notebook, a ``sqlite3`` shell, a backup) may hold the file's write
lock for seconds. Waiting for it on the event loop would stall every request of the run, so
the loop only hands answers over; this thread writes whatever has arrived in one transaction
as soon as the lock is free, retrying with a short busy timeout. Until then the answers stay
readable here (``pending``), so a lookup never misses one that was paid for. At exit the
process waits (a bounded time) for what is still unwritten.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

BUSY_TIMEOUT = 0.2
"""Seconds one write attempt waits for another process's lock before trying again."""
IDLE_EXIT = 1.0
"""Seconds the thread (and its connection) stays for more answers before it ends."""
EXIT_WAIT = 60.0
"""Seconds the process waits at exit for answers a lock kept from being written."""

class ForkGate:
    """Keeps ``fork()`` out of SQLite calls made on other threads.

    A thread inside SQLite holds its mutexes (the one guarding open files while it connects,
    a file's lock while it writes); a child forked at that moment inherits them held by a
    thread it does not have, and its first ``connect`` to that file hangs for ever. Any number
    of threads may be inside at once; a fork waits (a bounded time) until none is, and no
    thread enters until the fork is done.
    """

    WAIT = 10.0  # seconds a fork waits for a write stuck on another process's lock

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """In a forked child: no other thread exists, so none is inside."""
        self._cond = threading.Condition()
        self._inside = 0
        self._forking = False

    def __enter__(self) -> None:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._inside += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._inside -= 1
            self._cond.notify_all()

    def before_fork(self) -> None:
        self._cond.acquire()  # released in after_fork_in_parent
        self._forking = True
        deadline = time.monotonic() + self.WAIT
        while self._inside and (left := deadline - time.monotonic()) > 0:
            self._cond.wait(left)

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._cond.notify_all()
        self._cond.release()


sqlite_gate = ForkGate()
"""Held around every SQLite call this package makes off the caller's thread (and in Store)."""


Row = tuple  # ANSWER_COLUMNS, then the max_tokens the answer was asked with
Job = Callable[[sqlite3.Connection], None]
ANSWER_COLUMNS = ("key, model, text, finish_reason, input_tokens, output_tokens, cached_tokens, "
                  "cache_write_tokens, created")
INSERT_ANSWER = f"INSERT OR REPLACE INTO answers ({ANSWER_COLUMNS}) VALUES ({', '.join('?' * 9)})"
INSERT_CUT = "INSERT OR REPLACE INTO cut (key, max_tokens) VALUES (?, ?)"


def write_answers(db: sqlite3.Connection, rows: Iterable[Row]) -> None:
    """Answers into ``answers`` (the table every version reads and writes), and for those cut
    at the output limit, that limit into ``cut``."""
    rows = list(rows)
    db.executemany(INSERT_ANSWER, [row[:9] for row in rows])
    db.executemany(INSERT_CUT, [(row[0], row[9]) for row in rows if row[3] == "length"])


class _AfterAnswers:
    """A job that must not run once an answer handed over before it failed to be written."""

    def __init__(self, job: Job, lost_at: int) -> None:
        self.job, self.lost_at = job, lost_at

    def __call__(self, db: sqlite3.Connection) -> None:
        self.job(db)


def _alone(db: sqlite3.Connection, write: Callable[[], None]) -> Exception | None:
    """``write()`` inside a savepoint: on failure only it is undone (its error returned);
    a lock is raised, to try the whole transaction again."""
    db.execute("SAVEPOINT one")
    try:
        write()
    except Exception as exc:
        if _locked(exc) or not db.in_transaction:
            raise
        db.execute("ROLLBACK TO one")
        db.execute("RELEASE one")
        return exc
    db.execute("RELEASE one")
    return None


def _locked(exc: BaseException) -> bool:
    """Another connection holds the lock: try again soon (anything else will not pass)."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


class Writer:
    """The unwritten answers (and small jobs, such as the history) of one cache file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cond = threading.Condition()
        self._pending: dict[str, Row] = {}
        self._jobs: list[Job] = []
        self._thread: threading.Thread | None = None
        self.error: str | None = None  # the last write that failed for good (not a lock)
        self.lost = 0  # answers dropped by such failures

    def add(self, rows: Iterable[Row]) -> None:
        with self._cond:
            for row in rows:
                self._pending[row[0]] = row
            self._wake()

    def call(self, job: Job, *, after_answers: bool = False) -> None:
        """Run ``job(connection)`` inside the next write transaction, after the answers
        handed over before it (in the same transaction, or an earlier one). ``after_answers``:
        skip the job if an answer failed to be written since it was queued (a batch job is
        marked collected only once its answers are on disk)."""
        with self._cond:
            self._jobs.append(_AfterAnswers(job, self.lost) if after_answers else job)
            self._wake()

    def pending(self, keys: Iterable[str]) -> dict[str, Row]:
        with self._cond:
            if not self._pending:
                return {}
            return {k: self._pending[k] for k in keys if k in self._pending}

    @property
    def backlog(self) -> int:
        """Answers not written yet."""
        with self._cond:
            return len(self._pending)

    def flush(self, timeout: float | None = None, *, jobs_only: bool = False) -> bool:
        """Wait until everything handed over is written (True) or ``timeout`` s pass (False);
        ``jobs_only``: only the jobs (a batch job's record), not a stream of answers."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._jobs or (self._pending and not jobs_only):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def settle(self, timeout: float, lost_before: int) -> list[str]:
        """Wait up to ``timeout`` s for the backlog; what a run should say about it."""
        said = []
        if not self.flush(timeout):
            said.append(f"the cache file {self.path} is locked by another process: {self.backlog} "
                        "answers wait to be written; they are written as soon as it is free (keep "
                        "this Python process running, or call llmbatch_pd.cache.flush())")
        if self.lost > lost_before:
            said.append(f"cache write failed: {self.lost - lost_before} answers are not cached "
                        f"({self.error}); the results hold them")
        return said

    def _wake(self) -> None:  # with the condition held
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, daemon=True,
                                            name=f"llmbatch_pd cache writer ({self.path.name})")
            self._thread.start()
        self._cond.notify_all()

    def _main(self) -> None:
        db = None
        try:
            with sqlite_gate:
                db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                     check_same_thread=False)
                db.execute("PRAGMA synchronous=NORMAL")
            while True:
                with self._cond:
                    if not self._pending and not self._jobs:
                        self._cond.wait(IDLE_EXIT)  # a run's answers come in bursts
                    if not self._pending and not self._jobs:
                        self._thread = None  # the next add starts another
                        return
                    rows, jobs = dict(self._pending), list(self._jobs)
                with sqlite_gate:
                    self._write(db, rows, jobs)
        except Exception as exc:  # the file cannot be written at all: drop, say why
            with self._cond:
                self._give_up(self._pending, exc)
                self._pending, self._jobs, self._thread = {}, [], None
                self._cond.notify_all()
        finally:
            if db is not None:
                with sqlite_gate:
                    db.close()

    def _write(self, db: sqlite3.Connection, rows: dict[str, Row], jobs: list[Job]) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")  # waits BUSY_TIMEOUT for another process's lock
        except sqlite3.OperationalError as exc:
            if _locked(exc):
                return  # try again, with whatever else arrived meanwhile
            raise
        try:
            write_answers(db, rows.values())
            for job in jobs:
                if self._may_run(job, 0):
                    job(db)
            db.execute("COMMIT")
        except Exception as exc:  # one bad row or job, a full disk: never a dead thread
            self._rollback(db)
            if _locked(exc):
                return
            self._one_by_one(db, rows, jobs)
            return
        with self._cond:
            self._done(rows, jobs)

    def _one_by_one(self, db: sqlite3.Connection, rows: dict[str, Row], jobs: list[Job]) -> None:
        """A transaction failed for a reason other than a lock: write each answer and job on
        its own, so only those that cannot be written are given up (not the whole lot)."""
        bad_rows: list[BaseException] = []
        bad_jobs: list[BaseException] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for row in rows.values():
                if (exc := _alone(db, lambda row=row: write_answers(db, [row]))) is not None:
                    bad_rows.append(exc)
            for job in jobs:
                if self._may_run(job, len(bad_rows)):
                    if (exc := _alone(db, lambda job=job: job(db))) is not None:
                        bad_jobs.append(exc)
            db.execute("COMMIT")
        except Exception as exc:  # the file itself cannot be written (or is locked again)
            self._rollback(db)
            if _locked(exc):
                return
            with self._cond:
                self._give_up(rows, exc)
                self._done(rows, jobs)
            return
        with self._cond:
            if bad_rows or bad_jobs:
                first = (bad_rows or bad_jobs)[0]
                self.error = f"{type(first).__name__}: {first}"
                self.lost += len(bad_rows)  # a run's settle() warns with the count
            self._done(rows, jobs)

    def _may_run(self, job: Job, failed_now: int) -> bool:
        return not isinstance(job, _AfterAnswers) or self.lost + failed_now <= job.lost_at

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _done(self, rows: dict[str, Row], jobs: list[Job]) -> None:  # condition held
        for key, row in rows.items():
            if self._pending.get(key) is row:  # not replaced by a newer answer meanwhile
                del self._pending[key]
        self._jobs = [job for job in self._jobs if job not in jobs]
        self._cond.notify_all()

    def _give_up(self, rows, exc: BaseException) -> None:  # condition held
        self.error = f"{type(exc).__name__}: {exc}"
        self.lost += len(rows)


_writers: dict[str, Writer] = {}
_registry = threading.Lock()


def writer_for(path: Path) -> Writer:
    """The one writer of this file in this process."""
    name = str(Path(path).resolve())
    with _registry:
        if name not in _writers:
            _writers[name] = Writer(Path(name))
        return _writers[name]


def flush_all(timeout: float | None = None) -> bool:
    """Wait for every file's unwritten answers; False if some are still waiting."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _registry:
        writers = list(_writers.values())
    ok = True
    for writer in writers:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        ok = writer.flush(left) and ok
    return ok


def _forget_after_fork() -> None:
    """A forked child has none of the parent's threads: it starts its own writers."""
    global _registry
    _writers.clear()
    _registry = threading.Lock()
    sqlite_gate.reset()


os.register_at_fork(before=sqlite_gate.before_fork, after_in_parent=sqlite_gate.after_fork_in_parent,
                    after_in_child=_forget_after_fork)


@atexit.register
def _at_exit() -> None:
    with _registry:
        writers = list(_writers.values())
    if not any(w._pending or w._jobs for w in writers):
        return
    if not flush_all(EXIT_WAIT):
        with _registry:
            left = {str(w.path): w.backlog for w in _writers.values() if w.backlog}
        print(f"llmbatch_pd: {sum(left.values())} answers could not be written to the cache "
              f"(the file stayed locked by another process for {EXIT_WAIT:g} s): "
              f"{', '.join(left)}", file=sys.stderr)
