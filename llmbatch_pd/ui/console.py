"""The progress display for terminals, scripts and CI: a tqdm bar on a terminal, one plain line
every few seconds anywhere else (a pipe, a CI log, a file), with the key figures.

The line reads ``gpt-4.1-mini:  42%|████      | 126/300 $0.021/$0.50 · ok 120 · failed 6 ·
12s, ~16s left · 10 rows/s``: the figures come in order of importance (dollars first) and only
as many as fit the terminal's width follow the bar, so at 80 columns the dollars stay on screen
and the bar keeps at least ``MIN_BAR`` characters. The rate is answered rows per second over the
last ``RATE_WINDOW`` seconds, shown once ``RATE_AFTER`` seconds of samples exist (a first tick
says nothing about speed); rows answered from the cache do not count in it. When the stream is not a terminal no
``\r`` redraw is written: one line every ``log_interval`` seconds, and one at the end.

Redraws on a terminal are throttled (``update()`` may be called ten times a second; the bar
redraws at most every ``min_interval`` seconds).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Self

from tqdm import tqdm

from ..core import numbers as fmt
from ..core.figures import (
    batch_progress,
    budget_of,
    estimates_for,
    group_budget,
    group_elapsed,
    mode_of,
)
from .costs import PRICE_UNKNOWN, cost_known
from .lines import short_models
from .report import estimate_text, estimates_text

if TYPE_CHECKING:
    from ..core.report import RunReport
    from ..planning.estimate import Estimate

POSTFIX_KINDS = ("429", "5xx", "529", "timeout", "connection")
MIN_BAR = 10  # characters the bar keeps whatever the width
RATE_AFTER = 2.0  # seconds of samples before a rate is shown
RATE_WINDOW = 30.0  # seconds the rate is measured over
LOG_INTERVAL = 5.0  # seconds between two lines when the stream is not a terminal
SEP = " · "
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {figures}"


class _Tqdm(tqdm):
    """tqdm with one more field for ``bar_format``: ``{figures}``, our text after the bar (the
    way tqdm's documentation adds fields: a ``format_dict`` that returns more)."""

    figures = ""

    @property
    def format_dict(self) -> dict[str, Any]:
        d = super().format_dict
        d.update(figures=self.figures)
        return d


def redraws_in_place(stream: Any) -> bool:
    """Whether ``stream`` shows a ``\r`` redraw as one line: a terminal, or a Jupyter kernel's
    output stream (the frontend handles ``\r``); not a pipe, a file or a CI log."""
    if type(stream).__module__.startswith("ipykernel"):
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def columns(stream: Any) -> int:
    """The terminal's width for ``stream`` (``COLUMNS`` when set, else 80 when unknown)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, OSError, ValueError):
        try:
            return int(os.environ.get("COLUMNS", "80"))
        except ValueError:
            return 80


def fit(pieces: list[str], room: int) -> str:
    """The first piece (the dollars: always there), then the next ones while they fit ``room``."""
    out = ""
    for i, piece in enumerate(p for p in pieces if p):
        candidate = piece if not out else out + SEP + piece
        if i and len(candidate) > room:
            break
        out = candidate
    return out


def _not_answered(report: Any) -> dict[str, int]:
    """``failed`` rows (by the run's accounting: not those skipped for a missing value or a
    prompt too long, nor those never sent), and ``skipped`` and ``not sent`` when there are."""
    accounting = getattr(report, "accounting", None)
    if not callable(accounting):
        return {"failed": report.failed_rows}
    acc = accounting()
    out = {"failed": acc.failed_total, "skipped": acc.skipped_total, "not sent": acc.not_sent_total}
    return {k: v for k, v in out.items() if v or k == "failed"}


class _Bar:
    """What the two displays share: the way they show (a tqdm bar made on first use, or logged
    lines), the rate, throttled redraws, ``finish()``. A subclass says what it counts
    (``_desc``, ``_total``, ``_finished``, ``_answered``: rows the provider answered, for the
    rate) and its figures (``postfix()``, ``pieces()``)."""

    budget: float | None

    def __init__(self, *, file: Any, min_interval: float, log_interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.file = file
        self.clock = clock  # seconds, for the throttle, the log cadence and the rate
        self.min_interval = min_interval
        self.log_interval = log_interval
        self._last = 0.0
        self._logged: float | None = None
        self._closed = False
        self._bar: _Tqdm | None = None
        self._samples: deque[tuple[float, int]] = deque()

    @property
    def stream(self) -> Any:
        return self.file or sys.stderr

    @property
    def live(self) -> bool:
        """A bar redrawn in place (a terminal), rather than logged lines."""
        return redraws_in_place(self.stream)

    @property
    def bar(self) -> _Tqdm:
        """Made on first use, so a plan written by ``show_estimate()`` comes above it."""
        if self._bar is None:
            width = columns(self.stream)
            self._bar = _Tqdm(total=self._total(), desc=self._desc_for(width), unit="row", file=self.file,
                              ncols=width, mininterval=self.min_interval, bar_format=BAR_FORMAT)
        return self._bar

    def show(self) -> Self:
        return self

    def postfix(self) -> dict[str, Any]:
        raise NotImplementedError

    def pieces(self) -> list[str]:
        """The figures after the bar, most important first."""
        raise NotImplementedError

    # -- time and rate ---------------------------------------------------------------------

    def _sample(self, now: float) -> None:
        self._samples.append((now, self._answered()))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Answered rows per second over the last ``RATE_WINDOW`` seconds; None until
        ``RATE_AFTER`` seconds of samples exist."""
        if len(self._samples) < 2:
            return None
        (t0, a0), (t1, a1) = self._samples[0], self._samples[-1]
        if t1 - t0 < RATE_AFTER:
            return None
        return (a1 - a0) / (t1 - t0)

    def _time_piece(self) -> str:
        elapsed = self._elapsed()
        if elapsed is None:
            return ""
        rate, left = self.rate(), self._total() - self._finished()
        if not self._closed and rate and left / rate >= 1:
            return f"{fmt.duration(elapsed)}, ~{fmt.duration(left / rate)} left"
        return fmt.duration(elapsed)

    def _rate_piece(self) -> str:
        rate = self.rate()
        if self._closed:  # the run's own figure: answered rows over its wall time
            elapsed = self._elapsed()
            rate = self._answered() / elapsed if elapsed and elapsed >= RATE_AFTER else None
        return fmt.rate(rate) if rate is not None else ""

    def _elapsed(self) -> float | None:
        return None

    # -- drawing ---------------------------------------------------------------------------

    def update(self, *, force: bool = False) -> None:
        if self._closed:
            return
        now = self.clock()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        self._sample(now)
        if self.live:
            self._draw()
        elif self._logged is None:  # the first line once the run has started
            if force or self._elapsed() is not None:
                self._log(now)
        elif force or now - self._logged >= self.log_interval:
            self._log(now)

    def _draw(self) -> None:
        """Redraw the bar: a fixed width for it (``{bar:N}``: it does not jump as the figures
        change), the figures in the room that is left."""
        bar = self.bar
        width = columns(self.stream)
        total = self._total()
        desc = self._desc_for(width)
        bar_width = MIN_BAR if width < 120 else 2 * MIN_BAR
        fixed = len(desc) + 2 + 5 + 2 + 2 * len(f"{total:,}") + 2
        bar.ncols, bar.desc = width, desc
        bar.bar_format = BAR_FORMAT.replace("{bar}", f"{{bar:{bar_width}}}")
        bar.figures = fit(self.pieces(), max(0, width - fixed - bar_width))
        bar.n = min(self._finished(), total)
        bar.refresh()

    def _log(self, now: float) -> None:
        self._logged = now
        total, done = self._total(), min(self._finished(), self._total())
        share = fmt.percent(done / total) if total else "—"
        line = f"{self._desc()}: {done:,}/{total:,} rows ({share})" + SEP + SEP.join(p for p in self.pieces() if p)
        self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._closed:
            return
        now = self.clock()
        self._sample(now)
        self._closed = True  # from here on the figures are the whole run's (time, rate)
        if self.live:
            self._draw()
            self.bar.close()
        else:
            self._log(now)

    close = finish

    def _desc(self) -> str:
        raise NotImplementedError

    def _short_desc(self) -> str:
        return self._desc()

    def _desc_for(self, width: int) -> str:
        return self._desc() if width >= 100 else self._short_desc()

    def _total(self) -> int:
        raise NotImplementedError

    def _finished(self) -> int:
        raise NotImplementedError

    def _answered(self) -> int:
        raise NotImplementedError

    def _write(self, text: str) -> None:
        """Write above the bar (tqdm keeps the bar below it)."""
        tqdm.write(text, file=self.file or sys.stderr)

    def _dollars(self, post: dict[str, Any], spent: float, unknown: int = 0, of: int = 1) -> None:
        """``$spent/$budget`` (or just what was spent, without a budget); ``unknown`` of ``of``
        models have no price: "price unknown", or the known part with how many models it
        leaves out."""
        if unknown and unknown == of:
            post["$"] = PRICE_UNKNOWN
            return
        left_out = f" (excludes {unknown})" if unknown else ""
        if self.budget is not None:
            post["$"] = f"{fmt.money(spent)}/{fmt.money(self.budget)}{left_out}"
        else:
            post["$"] = fmt.money(spent) + left_out


class ConsoleProgress(_Bar):
    """Same interface as ``Panel``: ``update()``, ``close()``, ``show_estimate()``, ``finish()``."""

    def __init__(self, report: RunReport, estimate: Estimate | None = None, budget: float | None = None,
                 *, file: Any = None, min_interval: float = 0.25, log_interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(file=file, min_interval=min_interval, log_interval=log_interval, clock=clock)
        self.report = report
        self.estimate = estimate
        self.budget = budget_of(report, estimate, budget)

    def show_estimate(self, estimate: Estimate | None = None) -> None:
        """Write the plan above the bar (one figure a line)."""
        if estimate is not None:
            self.estimate = estimate
            self.budget = budget_of(self.report, estimate, self.budget)
        if self.estimate is not None:
            mode = mode_of(self.report, self.estimate)
            self._write(f"plan for {self.estimate.model} ({mode}):\n"
                        + estimate_text(self.estimate, budget=self.budget, mode=mode))

    def postfix(self) -> dict[str, Any]:
        """The figures by name (``$``, ``ok``, ``failed``, ``batch``, ``retrying``, error kinds,
        ``stopping``); ``pieces()`` says them in words."""
        r, s = self.report, self.report.stats
        post: dict[str, Any] = {"ok": r.answered_rows, **_not_answered(r)}
        if s.batch_status:  # mode="batch": the provider's job status and counts while it polls
            counts = s.batch_counts
            done = counts.get("succeeded", 0) + counts.get("errored", 0)
            post["batch"] = f"{s.batch_status} {done}/{counts.get('total', '?')}"
        if s.retrying:
            post["retrying"] = s.retrying
        for kind in POSTFIX_KINDS:
            if s.by_kind.get(kind):
                post[kind] = s.by_kind[kind]
        self._dollars(post, s.cost, 0 if cost_known(r, self.estimate) else 1)
        if s.stop_reason:
            post["stopping"] = s.stop_reason[:40]
        return post

    def pieces(self) -> list[str]:
        post = self.postfix()
        out = [post["$"], f"ok {post['ok']:,}"]
        if post["failed"]:
            out.append(f"failed {post['failed']:,}")
        out += [f"{key} {post[key]:,}" for key in ("skipped", "not sent") if key in post]
        if "stopping" in post:
            out.append(f"stopping: {post['stopping']}")
        if "batch" in post:
            out.append(f"batch {post['batch']}")
        out += [self._time_piece(), self._rate_piece()]
        if "retrying" in post:
            out.append(f"retrying {post['retrying']:,}")
        out += [f"{kind} ×{post[kind]:,}" for kind in POSTFIX_KINDS if kind in post]
        return out

    def _desc(self) -> str:
        return self.report.model

    def _short_desc(self) -> str:
        return short_models([self.report.model])[0]

    def _total(self) -> int:
        return self.report.rows

    def _finished(self) -> int:
        return self.report.finished_rows

    def _answered(self) -> int:
        """Rows the provider answered (not the cache: those come at once and say nothing of
        the speed)."""
        return max(0, self.report.answered_rows - self.report.cached - self.report.prefilled)

    def _elapsed(self) -> float | None:
        s = self.report.stats
        return s.elapsed if s.started is not None else None


class GroupProgress(_Bar):
    """The tqdm fallback for several models: one bar over rows × models, the summed dollars,
    then each model's answered rows of its own (``gpt-4.1-mini 990/1,000, 10 failed``). Same
    interface as ``ConsoleProgress``."""

    def __init__(self, reports: Sequence[RunReport], estimates: Sequence[Estimate | None] | None = None,
                 budget: float | None = None, *, file: Any = None, min_interval: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(file=file, min_interval=min_interval, clock=clock)
        self.reports = list(reports)
        self._estimates = estimates_for(self.reports, estimates)
        self.budget = group_budget(self.reports, self._estimates, budget)
        self.names = short_models([r.model for r in self.reports])

    @property
    def estimates(self) -> list[Estimate | None]:
        return estimates_for(self.reports, self._estimates)

    def show_estimate(self, estimates: Sequence[Estimate | None] | None = None) -> None:
        """Write the plans (a row per model and the total) above the bar."""
        if estimates is not None:
            self._estimates = estimates_for(self.reports, estimates)
            self.budget = group_budget(self.reports, self._estimates, self.budget)
        if any(e is not None for e in self.estimates):
            self._write("plan:\n" + estimates_text(self.reports, self.estimates, budget=self.budget))

    def postfix(self) -> dict[str, Any]:
        """``$`` (summed over the models) and one entry per model: answered of its rows, how
        many failed, its batch job's status."""
        post: dict[str, Any] = {}
        for name, r in zip(self.names, self.reports, strict=True):
            text = f"{r.answered_rows:,}/{r.rows:,}"
            for key, n in _not_answered(r).items():
                if n:
                    text += f", {n:,} {key}"
            s = r.stats
            if s.batch_status:
                done, total = batch_progress(s)
                text += f", batch {s.batch_status} {done}/{total or '?'}"
            post[name] = text
        known = [cost_known(r, e) for r, e in zip(self.reports, self.estimates, strict=True)]
        self._dollars(post, sum(r.stats.cost for r, k in zip(self.reports, known, strict=True) if k),
                      known.count(False), len(known))
        reasons = [r.stats.stop_reason for r in self.reports if r.stats.stop_reason]
        if reasons:
            post["stopping"] = reasons[0][:40]
        return post

    def pieces(self) -> list[str]:
        post = self.postfix()
        out = [post["$"]]
        if "stopping" in post:
            out.append(f"stopping: {post['stopping']}")
        out += [f"{name} {post[name]}" for name in self.names]
        return [*out, self._time_piece(), self._rate_piece()]

    def _desc(self) -> str:
        return f"{len(self.reports)} models"

    def _total(self) -> int:
        return sum(r.rows for r in self.reports)

    def _finished(self) -> int:
        return sum(r.finished_rows for r in self.reports)

    def _answered(self) -> int:
        return sum(max(0, r.answered_rows - r.cached - r.prefilled) for r in self.reports)

    def _elapsed(self) -> float | None:
        return group_elapsed(self.reports)


__all__ = ["ConsoleProgress", "GroupProgress"]
