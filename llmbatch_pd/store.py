"""The on-disk cache: every answer is written the moment it arrives, so nothing paid for is lost.

One SQLite file in WAL mode, shared safely by several processes (two notebooks at once).
Keys are digests of everything that changes an answer (provider, endpoint, model, messages,
parameters), never the API key. Errors are not cached: a re-run re-sends only failed rows.
Schema changes are small numbered migrations recorded in the file itself.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .errors import InputError
from .types import Reply, Usage

ENV_VAR = "LLMBATCH_PD_CACHE"


def _v1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE answers (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            text TEXT,
            finish_reason TEXT,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            cache_write_tokens INTEGER NOT NULL,
            created REAL NOT NULL
        )"""
    )


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1]


def default_path() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llmbatch_pd")) / "cache.sqlite"


def resolve(cache: bool | str | os.PathLike | None) -> Path | None:
    """``cache=`` as given by the user -> a file path, or None for no cache."""
    if cache is False:
        return None
    if cache is None or cache is True:
        return default_path()
    if isinstance(cache, (str, os.PathLike)):
        return Path(cache).expanduser()
    raise InputError(f"cache= must be True, False or a file path, not {cache!r}")


class Store:
    """A cache file. Open it in the thread that uses it (the engine's loop thread)."""

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
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                os.chmod(side, 0o600)

    def _migrate(self) -> None:
        db = self.db
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
        row = self.db.execute(
            "SELECT text, finish_reason, input_tokens, output_tokens, cached_tokens, "
            "cache_write_tokens, model FROM answers WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return Reply(row[0], Usage(row[2], row[3], row[4], row[5]), row[1], row[6])

    def put(self, key: str, model: str, reply: Reply) -> None:
        """Write one answer now (autocommit): a crash a moment later cannot lose it."""
        u = reply.usage
        self.db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, model, reply.text, reply.finish_reason, u.input_tokens, u.output_tokens,
             u.cached_tokens, u.cache_write_tokens, time.time()),
        )

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"
