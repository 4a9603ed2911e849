"""One run, from rows of field values to answers per row. No pandas here.

Rows stream through: render, skip rows with missing values, de-duplicate identical requests,
answer from the cache, and hand the rest to the engine. Answers land in per-row lists as they
arrive, so an interrupted run still has every row that finished.
"""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors
from .breaker import CircuitBreaker
from .budget import Ledger
from .engine import Engine, EngineStats, RetryPolicy
from .limits import RateLimiter
from .models import ModelRef
from .prompts import MissingValue, Template, build_messages, request_key
from .providers.base import Provider
from .store import Store
from .types import Reply, Request, Usage


@dataclass
class RunSpec:
    """Everything that decides what is sent and how; validated before anything is sent."""

    template: Template
    model: ModelRef
    provider: Provider
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 6
    timeout: float = 120.0
    missing: str = "skip"
    budget: float | None = None
    price: Callable[[Usage], float] | None = None
    cache_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens, **self.extra}


@dataclass
class RunReport:
    """What happened, for people: counts, tokens, dollars, time."""

    model: str
    rows: int = 0
    requests: int = 0
    duplicates: int = 0
    skipped: int = 0
    cached: int = 0
    answered_rows: int = 0
    failed_rows: int = 0
    stats: EngineStats = field(default_factory=EngineStats)
    interrupted: bool = False

    @property
    def finished_rows(self) -> int:
        return self.answered_rows + self.failed_rows

    def summary(self) -> str:
        s = self.stats
        rate = s.finished_count / s.elapsed if s.elapsed > 0 else 0.0
        lines = [
            f"model {self.model}: {self.rows} rows, {self.requests} requests "
            f"({self.duplicates} duplicates, {self.cached} cached, {self.skipped} skipped)",
            f"answered {self.answered_rows} rows, failed {self.failed_rows}; "
            f"{s.sent} sends, retries after: {dict(s.by_kind) or 'none'}",
            f"tokens in {s.input_tokens:,} / out {s.output_tokens:,}; cost ${s.cost:.4f}; "
            f"{s.elapsed:.1f}s ({rate:.1f} requests/s)",
        ]
        if s.stop_reason:
            lines.append(f"stopped early: {s.stop_reason}")
        if self.interrupted:
            lines.append("interrupted: finished rows were kept")
        return "\n".join(lines)

    __str__ = summary


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Cheap token guess for pacing (about 4 characters a token, plus the chat overhead)."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages) + 3


class Run:
    """A run over ``n`` rows whose field values come from ``rows``."""

    def __init__(self, spec: RunSpec, rows: Iterable[Mapping[str, Any]], n: int) -> None:
        self.spec = spec
        self.rows = rows
        self.n = n
        self.answers: list[str | None] = [None] * n
        self.errors: list[str | None] = [None] * n
        self.usages: list[Usage | None] = [None] * n
        self.report = RunReport(model=spec.model.full, rows=n)
        self.stats = self.report.stats
        self._followers: dict[int, list[int]] = {}
        self.engine: Engine | None = None
        self.store: Store | None = None
        self.warnings: list[str] = []

    def _requests(self) -> Iterator[Request]:
        spec, report = self.spec, self.report
        params = spec.params
        endpoint, model = spec.provider.endpoint, spec.provider.model
        leaders: dict[str, int] = {}
        for i, values in enumerate(self.rows):
            try:
                prompt = spec.template.render(values, spec.missing)
            except MissingValue as exc:
                self.errors[i] = str(exc)
                report.skipped += 1
                report.failed_rows += 1
                continue
            messages = build_messages(prompt, spec.system)
            key = request_key(endpoint, model, messages, params)
            leader = leaders.get(key)
            if leader is not None:
                report.duplicates += 1
                if self._is_finished(leader):  # its answer is here already: share it now
                    self._copy_row(leader, i)
                else:
                    self._followers.setdefault(leader, []).append(i)
                continue
            leaders[key] = i
            report.requests += 1
            hit = self.store.get(key) if self.store is not None else None
            if hit is not None:
                report.cached += 1
                self._record(i, hit, None, [i])
                continue
            yield Request(
                index=i,
                messages=messages,
                params=params,
                key=key,
                est_input_tokens=estimate_tokens(messages),
                max_output_tokens=spec.max_tokens or 0,
            )

    def _on_done(self, request: Request, reply: Reply | None, exc: errors.ProviderError | None) -> None:
        if reply is not None and reply.text is None:
            reply, exc = None, errors.RowError(f"the model returned no text (finish_reason={reply.finish_reason})")
        if reply is not None and self.store is not None:
            try:
                self.store.put(request.key, self.spec.provider.model, reply)
            except sqlite3.Error as err:  # the answer is still in memory; say so once
                self.store = None
                self._warn(f"cache write failed, caching is off for the rest of this run: {err}")
        rows = [request.index, *self._followers.pop(request.index, ())]
        self._record(request.index, reply, exc, rows)

    def _record(self, leader: int, reply: Reply | None, exc: errors.ProviderError | None, rows: list[int]) -> None:
        for i in rows:
            if reply is not None:
                self.answers[i] = reply.text
                self.usages[i] = reply.usage if i == leader else Usage()
            else:
                self.errors[i] = str(exc)
        if reply is not None:
            self.report.answered_rows += len(rows)
        else:
            self.report.failed_rows += len(rows)

    def _copy_row(self, leader: int, i: int) -> None:
        self.answers[i], self.errors[i] = self.answers[leader], self.errors[leader]
        if self.answers[i] is not None:
            self.usages[i] = Usage()
            self.report.answered_rows += 1
        else:
            self.report.failed_rows += 1

    def _is_finished(self, i: int) -> bool:
        return self.answers[i] is not None or self.errors[i] is not None

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, stacklevel=2)

    async def execute(self) -> RunReport:
        spec = self.spec
        ledger = None
        if spec.budget is not None or spec.price is not None:
            ledger = Ledger(spec.budget, spec.price or (lambda u: 0.0))
        self.engine = Engine(
            spec.provider,
            concurrency=spec.concurrency,
            limiter=RateLimiter(spec.rpm, spec.tpm),
            retry=RetryPolicy(max_retries=spec.max_retries),
            timeout=spec.timeout,
            ledger=ledger,
            stats=self.stats,
            on_warning=self._warn,
            breaker=CircuitBreaker(),
        )
        self.stats.total = self.n
        if spec.cache_path is not None:
            self.store = Store(spec.cache_path)
        try:
            await self.engine.run(self._requests(), self._on_done)
        except asyncio.CancelledError:
            self.report.interrupted = True
            self._close_unfinished("cancelled: the run was interrupted before this row finished")
            raise
        finally:
            if self.store is not None:
                self.store.close()
        self._close_unfinished(
            f"not sent: the run stopped ({self.stats.stop_reason})" if self.stats.stop_reason
            else "not sent"
        )
        return self.report

    def _close_unfinished(self, reason: str) -> None:
        """Every row ends with an answer or an explicit error."""
        for i in range(self.n):
            if self.answers[i] is None and self.errors[i] is None:
                self.errors[i] = reason
                self.report.failed_rows += 1
