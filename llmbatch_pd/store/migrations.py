"""The cache file's schema, as small numbered migrations applied in order and recorded in the
``migrations`` table: a file written by any earlier version opens, and one version's tables
are never changed under another (a new need gets a table of its own)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


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


def _v2(db: sqlite3.Connection) -> None:
    """Batch jobs: which provider job carries which request keys, and whether its results
    have all been collected (``collected`` = 1: nothing more to fetch from it)."""
    db.execute(
        """CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            model TEXT NOT NULL,
            keys TEXT NOT NULL,
            keys_digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            status TEXT NOT NULL,
            collected INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            updated REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX batches_open ON batches (endpoint, model, collected)")


def _v3(db: sqlite3.Connection) -> None:
    """Embeddings: one row per input text (keyed by endpoint, model, dimensions and text), the
    vector as raw little-endian float32 bytes (4 bytes a dimension, a quarter of JSON's size)."""
    db.execute(
        """CREATE TABLE vectors (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            dim INTEGER NOT NULL,
            data BLOB NOT NULL,
            tokens INTEGER NOT NULL,
            created REAL NOT NULL
        )"""
    )


def _v4(db: sqlite3.Connection) -> None:
    """What earlier runs of one template on one model measured (answer length, latency, the
    rate limits learned), so the next estimate starts from facts instead of defaults."""
    db.execute(
        """CREATE TABLE history (
            key TEXT PRIMARY KEY,
            requests INTEGER NOT NULL,
            input_tokens INTEGER NOT NULL,
            estimated_input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            latency_total REAL NOT NULL,
            rpm REAL,
            tpm REAL,
            updated REAL NOT NULL
        )"""
    )


def _v5(db: sqlite3.Connection) -> None:
    """The output limit an answer cut at it (finish_reason "length") was asked with: it is
    reused only by a request with the same limit, and flagged again. A table of its own, not
    a column of ``answers``: a notebook still on an older version keeps writing that one."""
    db.execute("CREATE TABLE cut (key TEXT PRIMARY KEY, max_tokens INTEGER)")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _v4, _v5]
