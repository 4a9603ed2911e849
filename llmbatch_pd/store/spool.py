"""A batch run's requests on disk, so a million rows in ``mode="batch"`` stay flat in memory.

The batch runner streams the rendered requests into a temporary SQLite file (one row per
unique request key: its batch line, the run's row, the token figures the budget needs and,
once submitted, its job) instead of a list. Jobs are read back from it one at a time, results
are matched to their row through it, and it is deleted when the run ends. What stays in
memory per request is one byte (answered or not).

Two requests with the same key (different cell values that render the same prompt) are one
line: the second is handed back as a duplicate of the first, whose row then shares its answer.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.types import Request
from .writer import sqlite_gate

READ_CHUNK = 1024  # rows read back at a time
LOOKUP_CHUNK = 500  # keys looked up in one query (SQLite allows 32,766 parameters)


@dataclass(slots=True)
class Spooled:
    """A spooled request as the runner needs it back (no prompt: that is in its line)."""

    seq: int
    key: str
    row: int
    tokens: int
    max_output: int
    worst: float
    job: str | None

    def request(self) -> Request:
        """What ``on_done`` is handed: the row, the key and the token figures."""
        return Request(index=self.row, messages=[], key=self.key, est_input_tokens=self.tokens,
                       max_output_tokens=self.max_output)


_COLUMNS = "seq, key, row, tokens, max_output, worst, job"


class Spool:
    """Unique requests of one batch run, in a temporary file deleted by :meth:`close`."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="llmbatch_pd-batch-")
        with sqlite_gate:  # see writer.ForkGate
            self.db = sqlite3.connect(Path(self._dir.name) / "requests.sqlite", isolation_level=None)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4096;"
            "CREATE TABLE req (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, row INT, "
            "tokens INT, max_output INT, worst REAL, weight INT, line BLOB, job TEXT);"
            "CREATE INDEX req_job ON req (job);")
        self.db.execute("BEGIN")
        self.count = 0
        self.done = bytearray(1)  # by seq: 1 once the request's row has its outcome

    def add(self, request: Request, line: bytes, worst: float, weight: int) -> int | None:
        """Spool ``request``; None, or the row of an earlier request with the same key."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO req (key, row, tokens, max_output, worst, weight, line) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (request.key, request.index, request.est_input_tokens, request.max_output_tokens,
             worst, weight, line))
        if cur.rowcount:
            self.count += 1
            self.done.append(0)
            return None
        return self.db.execute("SELECT row FROM req WHERE key = ?", (request.key,)).fetchone()[0]

    def seal(self) -> None:
        """Everything is spooled: commit, so reads see it."""
        self.db.execute("COMMIT")

    # what the budget needs -------------------------------------------------------------------

    def total_worst(self) -> float:
        return self.db.execute("SELECT coalesce(sum(worst), 0) FROM req").fetchone()[0]

    def output_caps(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT max_output FROM req LIMIT 2")]

    # jobs ------------------------------------------------------------------------------------

    def claim(self, keys: tuple[str, ...], job: str) -> int:
        """Assign the spooled requests among ``keys`` that no job has yet to ``job`` (a job an
        earlier run submitted); how many."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS probe (key TEXT PRIMARY KEY)")
        self.db.execute("BEGIN")
        self.db.execute("DELETE FROM probe")
        self.db.executemany("INSERT OR IGNORE INTO probe VALUES (?)", ((k,) for k in keys))
        claimed = self.db.execute(
            "UPDATE req SET job = ? WHERE job IS NULL AND key IN (SELECT key FROM probe)",
            (job,)).rowcount
        self.db.execute("COMMIT")
        return claimed

    def release(self, job: str) -> None:
        """Undo :meth:`claim` (the job cannot be read): those requests are submitted anew."""
        self.db.execute("UPDATE req SET job = NULL WHERE job = ?", (job,))

    def unassigned(self) -> Iterator[tuple[Spooled, bytes, int]]:
        """(request, line, weight) of every request in no job yet, in order, a chunk at a time
        (the caller may assign jobs between chunks)."""
        last = 0
        while True:
            rows = self.db.execute(
                f"SELECT {_COLUMNS}, line, weight FROM req WHERE job IS NULL AND seq > ? "
                "ORDER BY seq LIMIT ?", (last, READ_CHUNK)).fetchall()
            if not rows:
                return
            for r in rows:
                yield Spooled(*r[:7]), r[7], r[8]
            last = rows[-1][0]

    def assign(self, seqs: list[int], job: str) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("UPDATE req SET job = ? WHERE seq = ?", ((job, s) for s in seqs))
        self.db.execute("COMMIT")

    def waiting(self, job: str) -> list[Spooled]:
        """The requests of ``job`` whose rows have no outcome yet."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM req WHERE job = ?", (job,)).fetchall()
        return [Spooled(*r) for r in rows if not self.done[r[0]]]

    def lookup(self, keys: list[str]) -> dict[str, Spooled]:
        """The spooled requests among ``keys`` (results are matched a chunk at a time: one
        query for many keys is several times faster than one each)."""
        found: dict[str, Spooled] = {}
        for start in range(0, len(keys), LOOKUP_CHUNK):
            part = keys[start:start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(part))
            for r in self.db.execute(f"SELECT {_COLUMNS} FROM req WHERE key IN ({marks})", part):
                found[r[1]] = Spooled(*r)
        return found

    def close(self) -> None:
        try:
            with sqlite_gate:
                self.db.close()
        finally:
            self._dir.cleanup()
