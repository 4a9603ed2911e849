"""Request and token pacing that follows what the provider tells us.

Each limit is a GCRA pacer: a reservation moves a "theoretical arrival time" forward by
cost / rate, and the caller sleeps until its slot. Reservations are taken in call order, so
workers are served first come, first served, with no polling loop and O(1) work per send.

Limits come from the user (``rpm=``, ``tpm=``), from the provider's rate-limit headers, or,
when neither says anything (vLLM, many gateways), from 429s: under sustained 429 pressure the
server's rate is estimated from the successes it lets through, we pace just under that, win
pace back slowly with time, and step back at the first 429 a probe provokes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ..core.types import RateLimitInfo
from .blockade import SHARE, Blockade

Clock = Callable[[], float]

# A pacer lets this many seconds' worth of sends go out at once. Providers enforce per-minute
# limits over much shorter windows (OpenAI: "60,000 RPM may be enforced as 1,000 per second"),
# so a small burst keeps us inside their bucket while losing nothing at steady state.
BURST_SECONDS = 0.1
# When we learn a limit from headers, aim this close to it.
LEARNED_SHARE = 0.98


class Pacer:
    """Spaces out units (requests or tokens) at ``rate`` per second."""

    def __init__(self, rate: float | None, clock: Clock, burst_seconds: float = BURST_SECONDS):
        self.rate = rate
        self.burst_seconds = burst_seconds
        self._clock = clock
        self._tat = clock()

    def reserve(self, cost: float = 1.0) -> float:
        """Take a slot for ``cost`` units; returns how many seconds to wait before sending."""
        now = self._clock()
        if not self.rate:  # unlimited, but a hold (Retry-After) still applies
            return max(0.0, self._tat - self.burst_seconds - now)
        tat = max(self._tat, now)
        self._tat = tat + cost / self.rate
        return max(0.0, tat - self.burst_seconds - now)

    def hold_until(self, when: float) -> None:
        """Send nothing more before ``when`` (a server's Retry-After)."""
        self._tat = max(self._tat, when + self.burst_seconds)

    def restart(self, when: float) -> None:
        """Forget the slots handed out (their holders take new ones); the next one is ``when``."""
        self._tat = when + self.burst_seconds

    def __repr__(self) -> str:
        if not self.rate:
            return "Pacer(unlimited)"
        backlog = max(0.0, self._tat - self._clock())
        return f"Pacer(rate={self.rate:.2f}/s, backlog={backlog:.3f}s)"


class RateLimiter:
    """Paces requests and tokens, adapting to headers and to sustained 429s.

    A lone 429 only delays its own request (the engine honours its Retry-After). The pace
    changes only under *pressure*: more than ``threshold`` of the last responses were 429s.
    Then everyone waits out the server's hint once and, if no header told us the limit, the
    pace drops to just under the rate the server was *serving* (successes per second over the
    last ``SEND_WINDOW``: a server refusing the excess lets through exactly its limit), and at
    least to ``BACKOFF`` times the rate we were sending at. That pace is the ``ceiling``, the
    best known estimate of the limit. Calm responses win pace back with time, not per answer
    (per-answer growth compounds faster the faster we go, and overshoots): quickly
    (``FAST_GROWTH``) while below the ceiling or when it is unknown, slowly (``PROBE``) above
    it, and the first 429s such a probe provokes put the pace back on the ceiling. If slowing
    down does not lower the share of 429s, they are not about our pace: the cut is undone and
    the threshold raised. The share of 429s seen while pacing at the ceiling is ``noise``
    (random refusals a limit does not explain): cuts and probe resets look only at a share
    above it, so a steady 5 % of random 429s cannot ratchet the pace down streak by streak.

    A server that refuses *everything* for a while (a limit counted per calendar window) is a
    ``Blockade``: everyone stops, one probe at a time finds the reset, and the pace is set from
    one whole window. Whenever the pace is reset this way ``generation`` changes: a worker
    asleep on a slot taken before takes a new one (``Pacer.restart``).
    """

    WINDOW = 50
    MIN_SAMPLE = 20
    PRESSURE_SHARE = 0.15
    BACKOFF = 0.7
    HEADROOM = 0.95  # pace this close to the rate the server was seen to serve
    FAST_GROWTH = 0.7  # per second (compounded: about x2 a second) below the ceiling
    PROBE = 0.02  # per second above the ceiling: +2 % a second, so an overshoot stays small
    NOISE_MEMORY = 0.01  # weight of one answer in the noise share (about the last 100)

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self.told_rpm, self.told_tpm = rpm, tpm
        self.requests = Pacer(rpm / 60.0 if rpm else None, clock)
        self.tokens = Pacer(tpm / 60.0 if tpm else None, clock, burst_seconds=1.0)
        self.learned_from: str | None = "you" if rpm or tpm else None
        self._recent: deque[int] = deque(maxlen=self.WINDOW)
        self._limited = 0  # 429s among _recent
        self._sends: deque[float] = deque()  # send times over the last SEND_WINDOW seconds
        self._calm_until = 0.0
        self._first_send = 0.0
        self.threshold = self.PRESSURE_SHARE
        self._cut: tuple[float | None, float] | None = None  # (pace before, pressure then)
        # Learning from 429s alone: when successes came back, and the pace they vouch for.
        self._served: deque[float] = deque()  # success times over the last SEND_WINDOW
        self._first_served = 0.0
        self.ceiling: float | None = None
        self._grown_at = 0.0
        self.blockade = Blockade()
        self._probes = Pacer(None, clock, burst_seconds=0.0)  # one at a time while blocked
        self._probe_at = 0.0
        self.generation = 0
        self._window_paced = False  # the pace comes from a whole calendar window: no probing up
        # Share of 429s that pace does not explain (random refusals of a busy shared pool, a
        # gateway's fault injection): measured while pacing at the ceiling, where a limit
        # alone would refuse nothing. Cuts and probe resets look only at 429s above it.
        self.noise = 0.0
        self._unblocked_at = 0.0

    SEND_WINDOW = 2.0

    def reserve(self, tokens: int) -> float:
        """Seconds to wait before sending a request expected to use ``tokens``."""
        if self.blockade.blocked and self.learned_from in (None, "429s"):
            return self._probes.reserve(1.0)
        wait = self.requests.reserve(1.0)
        if self.tokens.rate:
            wait = max(wait, self.tokens.reserve(float(tokens)))
        if self.learned_from in (None, "429s"):
            now = self._clock()
            if not self._first_send:
                self._first_send = now
            self._sends.append(now + wait)
            self._send_rate()  # trims the window, so it never grows with the run
        return wait

    @property
    def pressure(self) -> float:
        """Share of 429s among the last responses (0 until there are enough to judge)."""
        n = len(self._recent)
        return self._limited / n if n >= self.MIN_SAMPLE else 0.0

    def _margin(self, sigmas: float) -> float:
        """The noise share plus ``sigmas`` standard errors of a WINDOW-answer reading of it."""
        return self.noise + sigmas * (self.noise * (1 - self.noise) / self.WINDOW) ** 0.5

    def _learn_noise(self, limited: int) -> None:
        rate, ceiling = self.requests.rate, self.ceiling
        if (self.learned_from == "429s" and rate and ceiling and rate <= ceiling * 1.001
                and not self.blockade.blocked):
            self.noise += self.NOISE_MEMORY * (limited - self.noise)

    def _record(self, limited: int) -> None:
        self._learn_noise(limited)
        if len(self._recent) == self._recent.maxlen:
            self._limited -= self._recent[0]
        self._recent.append(limited)
        self._limited += limited

    def _send_rate(self) -> float | None:
        now = self._clock()
        while self._sends and self._sends[0] < now - self.SEND_WINDOW:
            self._sends.popleft()
        if not self._sends:
            return None
        span = min(self.SEND_WINDOW, max(now - self._first_send, 0.1))
        return len(self._sends) / span

    def _served_rate(self) -> tuple[float, bool]:
        """Successes per second over the last SEND_WINDOW, and whether that is a fair measure.

        Early in a run answers still in flight are missing from the count, so the rate reads
        low: it is "fair" only once successes have been coming back for half a window.
        """
        now = self._clock()
        while self._served and self._served[0] < now - self.SEND_WINDOW:
            self._served.popleft()
        waited = now - self._first_served if self._first_served else 0.0
        span = min(self.SEND_WINDOW, max(waited, 0.1))
        return len(self._served) / span, waited >= self.SEND_WINDOW / 2

    def observe(self, info: RateLimitInfo | None) -> None:
        """Learn from a response's rate-limit headers: they are the authority."""
        if info is None:
            return
        now = self._clock()
        if info.limit_requests:
            rate = info.limit_requests / 60.0
            rate = min(rate, self.told_rpm / 60.0) if self.told_rpm else rate * LEARNED_SHARE
            self.requests.rate = rate
            if self.learned_from != "you":
                self.learned_from = "headers"
            if info.remaining_requests is not None and info.remaining_requests < 1:
                self.requests.hold_until(now + 1.0 / rate)
        if info.limit_tokens:
            rate = info.limit_tokens / 60.0
            rate = min(rate, self.told_tpm / 60.0) if self.told_tpm else rate * LEARNED_SHARE
            self.tokens.rate = rate
            if info.remaining_tokens is not None and info.remaining_tokens <= 0 and info.reset_tokens:
                self.tokens.hold_until(now + min(info.reset_tokens, 60.0))

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429. Under sustained pressure, slow down; otherwise leave the pace alone."""
        self._record(1)
        now = self._clock()
        if self.learned_from in (None, "429s"):
            self._blocked(now, retry_after)
        rate = self.requests.rate
        if (self.learned_from == "429s" and self.ceiling and rate and rate > self.ceiling
                and self.pressure > self._margin(2)):
            # probing above the last known limit found it again: back to where it was calm,
            # or to what the server served meanwhile, if that is more
            served, fair = self._served_rate()
            if fair:
                self.ceiling = max(self.ceiling, min(served * self.HEADROOM, rate))
            self.requests.rate = self.ceiling
            self._grown_at = now
        pressure = self.pressure
        # Once 429s have set the pace they are known to be about it: react to half the share,
        # or a pace a little above the limit would sit between "grow" and "cut" for good.
        threshold = self.threshold / 2 if self.learned_from == "429s" else self.threshold
        threshold = max(threshold, self._margin(3))  # a streak of noise is not a limit
        self._judge_cut(now)
        if pressure < threshold or now < self._calm_until:
            return
        self._recent.clear()
        self._limited = 0
        if self._cut is not None and pressure >= 0.8 * self._cut[1]:
            self._undo_cut(now, pressure)
            return
        pause = min(retry_after if retry_after is not None else 1.0, 10.0)
        served, fair = self._served_rate()
        if self.learned_from is None and not fair:
            # The run has just begun: answers still in flight are missing from the served
            # count, and a pace set from it would be far too low (and, reserved by every
            # worker at once, would last long after). Hold everyone until they are back.
            pause = max(pause, self.SEND_WINDOW / 2)
            self.requests.hold_until(now + pause)
            self._calm_until = now + pause
            return
        # act once per episode: give the new pace time to show before judging again
        self._calm_until = now + pause + self.SEND_WINDOW
        self.requests.hold_until(now + pause)
        # remember the pace before the first cut of a chain, so an undo restores all of it
        self._cut = (self._cut[0] if self._cut else self.requests.rate, pressure)
        if self.learned_from in (None, "429s"):
            current = self.requests.rate or self._send_rate() or 1.0
            # A server refusing our excess lets its limit through: pace just under what it
            # served. A reading not yet fair is low, which is safe: it sets no ceiling, and
            # growth below an unknown ceiling is fast.
            target = served * self.HEADROOM
            if not fair:
                target = min(current * self.BACKOFF, target)
            self.requests.rate = max(target, 0.2)
            self.ceiling = target if fair else None
            self._grown_at = now + pause
            self.learned_from = "429s"

    def _undo_cut(self, now: float, pressure: float) -> None:
        """The last slow-down did not lower the share of 429s: they are not about our pace (an
        overloaded shared pool, injected faults). Undo it; that share is noise from now on."""
        assert self._cut is not None
        self.requests.rate = self._cut[0]
        self.threshold = min(0.6, pressure + 0.1)
        self.noise = max(self.noise, pressure)
        self._cut = None
        self.ceiling = None
        self._calm_until = now + self.SEND_WINDOW

    def _judge_cut(self, now: float) -> None:
        """A whole window answered at the new pace tells whether the last cut helped."""
        if self._cut is None or len(self._recent) < self.WINDOW or now < self._calm_until:
            return
        if self.pressure >= 0.8 * self._cut[1]:
            self._undo_cut(now, self.pressure)
        else:
            self._cut = None  # the slow-down worked

    def _blocked(self, now: float, retry_after: float | None) -> None:
        """Everything refused: hold everyone but one probe at a time (the pace itself is
        judged as usual, for when the block ends)."""
        probe_at = self.blockade.refused(now, retry_after)
        if probe_at is not None and probe_at != self._probe_at:
            self._probe_at = probe_at
            self._probes.rate = 1.0 / self.blockade.interval
            self._probes.restart(probe_at)
            self.generation += 1

    def _unblocked(self, now: float, rate: float | None, whole: bool) -> None:
        """The limit has reset: pace from what the last window served."""
        self.learned_from = "429s"
        self._recent.clear()
        self._limited = 0
        self._cut = None
        self._unblocked_at = self._grown_at = now
        self._calm_until = now + self.SEND_WINDOW
        self.threshold = self.PRESSURE_SHARE  # what the 429s of the block said is void
        self._window_paced = bool(rate and whole)
        if rate and whole:
            self.ceiling = self.requests.rate = rate * SHARE
        elif rate:  # a first guess, high if the run began inside that window: probe above it
            self.ceiling = self.requests.rate = rate
        self.requests.restart(now)

    def on_success(self) -> None:
        """Calm answers win back the pace that 429s took, until it no longer binds."""
        self._record(0)
        if self.learned_from not in (None, "429s"):
            return
        now = self._clock()
        was_blocked = self.blockade.blocked
        if (reset := self.blockade.succeeded(now, self._first_send or now)) is not None:
            self._unblocked(now, *reset)
        if was_blocked:
            self.generation += 1  # probe slots are void: take a slot at the pace
        self._served.append(now)
        if not self._first_served:
            self._first_served = now
        if not self.requests.rate:
            self._served_rate()  # trims the window, so it never grows with the run
            return
        self._judge_cut(now)
        if len(self._recent) >= self.MIN_SAMPLE and self.pressure < self.threshold / 2:
            # growth with time, not per answer: a step covers at most a quarter second
            elapsed = min(max(now - self._grown_at, 0.0), 0.25)
            self._grown_at = max(self._grown_at, now)
            below = self.ceiling is None or self.requests.rate < self.ceiling
            if self._window_paced and not below:
                return  # a whole window was measured: going faster only fills it up early
            grown = self.requests.rate * (1 + (self.FAST_GROWTH if below else self.PROBE) * elapsed)
            if below and self.ceiling is not None:
                grown = min(grown, self.ceiling)  # fast up to the ceiling, then probe slowly
            self.requests.rate = grown
            sending = self._send_rate()
            settled = now - self._unblocked_at > 2 * self.SEND_WINDOW
            if sending and self.requests.rate > 4 * sending and settled:
                self.requests.rate = None  # far above what we send: the limit is gone
                self.learned_from = None
                self.ceiling = None

    def __repr__(self) -> str:
        return (
            f"RateLimiter(requests={self.requests!r}, tokens={self.tokens!r}, "
            f"from={self.learned_from}, pressure={self.pressure:.0%})"
        )
