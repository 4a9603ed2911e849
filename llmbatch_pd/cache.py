"""See and trim the cache file: how big it is, what it holds per model, and clearing it.

```python
import llmbatch_pd
llmbatch_pd.cache.info()                                   # size, answers and vectors per model
llmbatch_pd.cache.clear(model="openai/gpt-4.1-mini")       # one model's answers and vectors
llmbatch_pd.cache.clear(older_than_days=30)                # everything older than 30 days
```

``path=`` picks another file than the default one (``LLMBATCH_PD_CACHE`` or the user cache
directory). Records of batch jobs whose results were not all collected are never cleared:
they are how a re-run collects answers already paid for instead of paying again.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from .core.errors import InputError
from .store.db import Store, default_path
from .store.writer import flush_all, writer_for

__all__ = ["CacheInfo", "clear", "flush", "info"]

BY_MODEL_COLUMNS = ["model", "answers", "vectors", "oldest", "newest"]


@dataclass(frozen=True)
class CacheInfo:
    """What a cache file holds. ``by_model`` has one row per model: ``answers`` (chat
    answers), ``vectors`` (embeddings), ``oldest`` and ``newest`` (when they were stored)."""

    path: Path
    size_bytes: int = 0
    answers: int = 0
    vectors: int = 0
    open_batches: int = 0  # batch jobs whose results a re-run would still collect
    oldest: datetime | None = None
    newest: datetime | None = None
    by_model: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BY_MODEL_COLUMNS))

    @property
    def size_mb(self) -> float:
        return self.size_bytes / 1e6

    def __repr__(self) -> str:
        span = f", {self.oldest:%Y-%m-%d} to {self.newest:%Y-%m-%d}" if self.oldest and self.newest else ""
        return (f"<CacheInfo {str(self.path)!r}: {self.size_mb:.1f} MB, {self.answers:,} answers, "
                f"{self.vectors:,} vectors, {len(self.by_model)} models{span}>")

    def _repr_html_(self) -> str:
        head = repr(self)[1:-1].replace("&", "&amp;").replace("<", "&lt;")
        return f"<p>{head}</p>" + self.by_model.to_html(index=False)


def _path(path: str | os.PathLike | None) -> Path:
    return Path(path).expanduser() if path is not None else default_path()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _when(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts)


def info(path: str | os.PathLike | None = None) -> CacheInfo:
    """Size on disk (with the WAL file), answers and vectors per model, oldest and newest."""
    file = _path(path)
    if not file.exists():
        return CacheInfo(file)
    writer_for(file).flush(5.0)  # this process's unwritten answers count too
    store = Store(file)
    try:
        db = store.db
        rows = db.execute(
            "SELECT model, SUM(kind = 'a'), SUM(kind = 'v'), MIN(created), MAX(created) FROM ("
            " SELECT model, 'a' AS kind, created FROM answers"
            " UNION ALL SELECT model, 'v', created FROM vectors"
            ") GROUP BY model ORDER BY model").fetchall()
        open_batches = db.execute("SELECT COUNT(*) FROM batches WHERE collected = 0").fetchone()[0]
    finally:
        store.close()
    by_model = pd.DataFrame(
        [(m, int(a), int(v), _when(lo), _when(hi)) for m, a, v, lo, hi in rows],
        columns=BY_MODEL_COLUMNS)
    return CacheInfo(
        path=file, size_bytes=_size(file), answers=int(by_model["answers"].sum()),
        vectors=int(by_model["vectors"].sum()), open_batches=int(open_batches),
        oldest=_when(min((r[3] for r in rows), default=None)),
        newest=_when(max((r[4] for r in rows), default=None)), by_model=by_model)


def clear(model: str | None = None, older_than_days: float | None = None,
          path: str | os.PathLike | None = None) -> int:
    """Remove cached answers and vectors: all of them, one model's (``"openai/gpt-4.1-mini"``
    or the name as stored, ``"gpt-4.1-mini"``), or those stored more than
    ``older_than_days`` ago (both: both conditions). Returns how many were removed, and
    gives the space back to the disk (VACUUM). Clearing everything also forgets the measured
    history that estimates start from."""
    if older_than_days is not None and (isinstance(older_than_days, bool)
                                        or not isinstance(older_than_days, (int, float))
                                        or older_than_days < 0):
        raise InputError(f"older_than_days= must be a number of days >= 0, not {older_than_days!r}")
    if model is not None and (not isinstance(model, str) or not model):
        raise InputError(f"model= must be a model name, not {model!r}")
    file = _path(path)
    if not file.exists():
        return 0
    writer_for(file).flush(30.0)  # else an answer written a moment later would survive
    where, args = [], []
    if model is not None:
        names = [model, model.split("/", 1)[1]] if "/" in model else [model]
        where.append(f"model IN ({', '.join('?' * len(names))})")
        args += names
    if older_than_days is not None:
        where.append("created < ?")
        args.append(time.time() - older_than_days * 86400)
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    store = Store(file)
    db = store.db
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            removed = sum(db.execute(f"DELETE FROM {table}{condition}", args).rowcount
                          for table in ("answers", "vectors"))
            db.execute("DELETE FROM cut WHERE key NOT IN (SELECT key FROM answers)")
            if model is None:  # the history has no model column; a model's clear keeps it
                old, since = ("", []) if older_than_days is None else (" AND updated < ?", args[-1:])
                db.execute(f"DELETE FROM history WHERE 1{old}", since)
                db.execute(f"DELETE FROM batches WHERE collected = 1{old}", since)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if removed:
            try:
                db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                pass  # another process is using the file: the space is reused, not returned
    finally:
        store.close()
    return removed


def flush(timeout: float | None = None) -> bool:
    """Wait until every answer this process received is written to its cache file (they
    wait while another process holds the file's write lock). False if ``timeout`` s passed."""
    return flush_all(timeout)
