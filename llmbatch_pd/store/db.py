"""The on-disk cache: every answer is written the moment it arrives, so nothing paid for is lost.

One SQLite file in WAL mode, shared safely by several processes (two notebooks at once).
Keys are digests of everything that changes an answer (provider, endpoint, model, messages,
parameters), never the API key, nor ``max_tokens``: a complete answer is the same answer under
any limit, and an answer cut at the limit is stored with the limit it was cut at (table
``cut``), so it is never served as complete. Errors are not cached: a re-run re-sends only
failed rows. Schema changes are small numbered migrations recorded in the file itself.

A run's answers are written by :mod:`.writer`'s thread, so another process holding the
file's write lock never stalls the event loop.

Batch jobs (``mode="batch"``) are recorded here the moment the provider creates them, with
the keys of the requests they carry, so a re-run after a crash or a kernel restart re-attaches
to the running job instead of submitting (and paying for) the same requests again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.types import Reply, Usage
from .migrations import MIGRATIONS
from .writer import ANSWER_COLUMNS, Row, sqlite_gate, write_answers, writer_for

ENV_VAR = "LLMBATCH_PD_CACHE"
BATCH_READ_WAIT = 5.0
"""Seconds a read of the batch jobs waits for the records this process handed to the writer
(only those: answers streaming in from another run do not hold it up)."""


HISTORY_KEEP = 1000
"""History is a running sum that weighs at most this many earlier requests, so recent runs
(a changed prompt style, a provider that got faster) count."""


@dataclass(frozen=True)
class History:
    """Sums over earlier answered requests of one template on one model."""

    requests: int
    input_tokens: int
    estimated_input_tokens: int
    output_tokens: int
    latency_total: float
    rpm: float | None = None  # rate limits learned from the provider's headers, per minute
    tpm: float | None = None


def keys_digest(keys: Iterable[str]) -> str:
    """One short digest of a set of request keys (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class BatchRecord:
    """A provider batch job as recorded when it was created."""

    id: str
    provider: str
    endpoint: str
    model: str
    keys: tuple[str, ...]
    status: str
    created: float
    collected: bool = False


def default_path() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llmbatch_pd")) / "cache.sqlite"


REFRESH = "refresh"
"""``cache="refresh"``: ask again and overwrite what the (default) cache file holds."""


def resolve(cache: bool | str | os.PathLike | None) -> Path | None:
    """``cache=`` as given by the user -> a file path, or None for no cache."""
    if cache is False:
        return None
    if cache is None or cache is True or cache == REFRESH:
        return default_path()
    if isinstance(cache, (str, os.PathLike)):
        return Path(cache).expanduser()
    raise InputError(f"cache= must be True, False or a file path, not {cache!r}")


def _gated(method: Callable) -> Callable:
    """Run a Store method with ``fork()`` kept out (see ``writer.ForkGate``)."""
    @functools.wraps(method)
    def gated(*args, **kwargs):
        with sqlite_gate:
            return method(*args, **kwargs)
    return gated


class Store:
    """A cache file. Open it in the thread that uses it (the engine's loop thread)."""

    @_gated
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():  # owner-only from the first byte
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a killed process
        self.db.execute("PRAGMA busy_timeout=30000")
        self._migrate()
        self.writer = writer_for(self.path)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def _migrate(self) -> None:
        db = self.db
        try:  # read first: another process may hold the write lock for a while
            if {r[0] for r in db.execute("SELECT version FROM migrations")} >= set(
                    range(1, len(MIGRATIONS) + 1)):
                return
        except sqlite3.OperationalError:
            pass  # a new file
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied REAL)")
            done = {row[0] for row in db.execute("SELECT version FROM migrations")}
            for version, migration in enumerate(MIGRATIONS, start=1):
                if version not in done:
                    migration(db)
                    db.execute("INSERT INTO migrations VALUES (?, ?)", (version, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def get(self, key: str) -> Reply | None:
        return self.get_many([key]).get(key)

    @_gated
    def get_many(self, keys: list[str]) -> dict[str, Reply]:
        """The answers held for any of ``keys``, in one query (a chunk of a run's rows),
        including those handed to the writer and not on disk yet."""
        waiting = self.writer.pending(keys)
        rest = [k for k in keys if k not in waiting] if waiting else keys
        found = {row[0]: _reply(row)
                 for row in self._rows_for(
                     f"SELECT {ANSWER_COLUMNS}, cut.max_tokens FROM answers LEFT JOIN cut USING (key)",
                     rest)}
        found.update((key, _reply(row)) for key, row in waiting.items())
        return found

    def _rows_for(self, select: str, keys: list[str]) -> Iterable[tuple]:
        """``select ... WHERE key IN (keys)``, in slices under SQLite's bound-parameter limit."""
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            yield from self.db.execute(f"{select} WHERE key IN ({','.join('?' * len(part))})", part)

    def put(self, key: str, model: str, reply: Reply) -> None:
        """Write one answer now (committed): a crash a moment later cannot lose it."""
        self.put_many([(key, model, reply)])

    def put_later(self, items: list[tuple[str, str, Reply]]) -> None:
        """Hand answers to the file's writer thread: written within milliseconds, or as soon
        as another process releases the write lock; readable by ``get_many`` meanwhile."""
        now = time.time()
        self.writer.add([_row(key, model, reply, now) for key, model, reply in items])

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for the writer (True: everything handed over is on disk)."""
        return self.writer.flush(timeout)

    # batch jobs -------------------------------------------------------------------------

    @_gated
    def add_batch(self, batch_id: str, *, provider: str, endpoint: str, model: str,
                  keys: list[str], status: str) -> None:
        """Record a job the provider has just created (autocommit, before anything else)."""
        _add_batch(self.db, batch_id, provider, endpoint, model, keys, status)

    def add_batch_later(self, batch_id: str, *, provider: str, endpoint: str, model: str,
                        keys: list[str], status: str) -> None:
        """``add_batch`` on the writer thread: another process's lock never stalls the loop."""
        self.writer.call(lambda db: _add_batch(db, batch_id, provider, endpoint, model, keys, status))

    def open_batches(self, endpoint: str, model: str) -> list[BatchRecord]:
        """Jobs for this endpoint and model whose results have not all been collected. A job
        this process recorded a moment ago may still wait on the writer thread: it is waited
        for (briefly), or a run started right after would submit the same requests again."""
        self.writer.flush(BATCH_READ_WAIT, jobs_only=True)
        with sqlite_gate:
            rows = self.db.execute(
                "SELECT id, provider, endpoint, model, keys, status, created FROM batches "
                "WHERE endpoint = ? AND model = ? AND collected = 0 ORDER BY created",
                (endpoint, model),
            ).fetchall()
        return [BatchRecord(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6]) for r in rows]

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        self.writer.flush(BATCH_READ_WAIT, jobs_only=True)  # as open_batches: what this process recorded counts
        with sqlite_gate:
            r = self.db.execute(
                "SELECT id, provider, endpoint, model, keys, status, created, collected FROM batches "
                "WHERE id = ?", (batch_id,),
            ).fetchone()
        if r is None:
            return None
        return BatchRecord(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])), r[5], r[6], bool(r[7]))

    @_gated
    def set_batch_status(self, batch_id: str, status: str, *, collected: bool = False) -> None:
        """The job's latest status; ``collected=True`` once every result is in the cache
        (or known to be missing), so no later run attaches to it again."""
        _set_batch_status(self.db, batch_id, status, collected)

    def set_batch_status_later(self, batch_id: str, status: str, *, collected: bool = False) -> None:
        """``set_batch_status`` on the writer thread, behind the answers handed over before
        it: ``collected`` reaches the file only with (or after) the job's answers, and not
        at all if one of them could not be written (the next run reads the job again)."""
        self.writer.call(lambda db: _set_batch_status(db, batch_id, status, collected),
                         after_answers=collected)

    @_gated
    def put_many(self, items: list[tuple[str, str, Reply]]) -> None:
        """Write several answers in one transaction (one WAL commit instead of one each)."""
        now = time.time()
        self.db.execute("BEGIN")
        try:
            write_answers(self.db, [_row(key, model, r, now) for key, model, r in items])
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # what earlier runs measured -------------------------------------------------------------

    @_gated
    def get_history(self, key: str) -> History | None:
        return _get_history(self.db, key)

    @_gated
    def add_history(self, key: str, run: History) -> None:
        """Fold one run's figures into the template's history (older ones weigh less)."""
        _add_history(self.db, key, run)

    def add_history_later(self, key: str, run: History) -> None:
        """``add_history`` on the writer thread (never waits for another process's lock)."""
        self.writer.call(lambda db: _add_history(db, key, run))

    # embeddings ---------------------------------------------------------------------------

    @_gated
    def get_vectors(self, keys: list[str]) -> dict[str, tuple[np.ndarray, int]]:
        """The cached vectors among ``keys``: key -> (float32 vector, its input's tokens)."""
        found: dict[str, tuple[np.ndarray, int]] = {}
        for key, dim, data, tokens in self._rows_for("SELECT key, dim, data, tokens FROM vectors", keys):
            vector = np.frombuffer(data, dtype="<f4")
            if vector.shape[0] == dim:  # a torn or foreign row is a miss, not a wrong answer
                found[key] = (vector, tokens)
        return found

    @_gated
    def put_vectors(self, items: list[tuple[str, str, np.ndarray, int]]) -> None:
        """Write (key, model, vector, tokens) rows in one transaction."""
        now = time.time()
        self.db.execute("BEGIN")
        try:
            self.db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?, ?)",
                [(key, model, int(v.shape[0]), np.asarray(v, dtype="<f4").tobytes(), int(tokens), now)
                 for key, model, v, tokens in items],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    @_gated
    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    @_gated
    def close(self) -> None:
        self.db.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"


def _add_batch(db: sqlite3.Connection, batch_id: str, provider: str, endpoint: str, model: str,
               keys: list[str], status: str) -> None:
    now = time.time()
    db.execute(
        "INSERT OR REPLACE INTO batches (id, provider, endpoint, model, keys, keys_digest, "
        "size, status, collected, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (batch_id, provider, endpoint, model, json.dumps(keys), keys_digest(keys), len(keys),
         status, now, now),
    )


def _set_batch_status(db: sqlite3.Connection, batch_id: str, status: str, collected: bool) -> None:
    db.execute(
        "UPDATE batches SET status = ?, collected = MAX(collected, ?), updated = ? WHERE id = ?",
        (status, int(collected), time.time(), batch_id),
    )


def _get_history(db: sqlite3.Connection, key: str) -> History | None:
    row = db.execute(
        "SELECT requests, input_tokens, estimated_input_tokens, output_tokens, latency_total, "
        "rpm, tpm FROM history WHERE key = ?", (key,)).fetchone()
    return History(*row) if row else None


def _add_history(db: sqlite3.Connection, key: str, run: History) -> None:
    old = _get_history(db, key)
    if old is not None:
        keep = min(1.0, HISTORY_KEEP / old.requests) if old.requests else 1.0
        run = History(
            round(old.requests * keep) + run.requests,
            round(old.input_tokens * keep) + run.input_tokens,
            round(old.estimated_input_tokens * keep) + run.estimated_input_tokens,
            round(old.output_tokens * keep) + run.output_tokens,
            old.latency_total * keep + run.latency_total,
            run.rpm or old.rpm, run.tpm or old.tpm)
    db.execute("INSERT OR REPLACE INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (key, run.requests, run.input_tokens, run.estimated_input_tokens,
                run.output_tokens, run.latency_total, run.rpm, run.tpm, time.time()))


def _row(key: str, model: str, reply: Reply, now: float) -> Row:
    u = reply.usage
    return (key, model, _storable(reply.text), reply.finish_reason, u.input_tokens, u.output_tokens,
            u.cached_tokens, u.cache_write_tokens, now, reply.limit)


def _reply(row: Row) -> Reply:
    """A stored row (ANSWER_COLUMNS, then the limit) -> the Reply it holds."""
    return Reply(row[2], Usage(row[4], row[5], row[6], row[7]), row[3], row[1], limit=row[9])


def _storable(text: str | None) -> str | None:
    """Text SQLite accepts: a lone surrogate (half an emoji, which a JSON reply may carry as
    ``\\ud83d``) is not UTF-8 and would make the whole write fail; it becomes U+FFFD, so the
    answer is kept and any version of this library (or a sqlite3 shell) can still read it."""
    if not isinstance(text, str):
        return text  # None; anything else SQLite refuses on the writer, alone
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")
