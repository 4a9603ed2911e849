"""When a server refuses everything: limits counted per calendar window.

A gateway that counts requests per fixed window (LiteLLM's proxy: ``rpm:`` per calendar
minute) and says nothing but a bare 429 behaves unlike a refilling bucket: it lets a window's
worth through at once, then refuses *every* request until the next boundary. The rate it served
over the last few seconds reads 0 there, and a pace set from it would never recover.

So a run of ``RUN`` 429s with no success between them is a *block*: the limiter stops everyone
and sends one probe at a time (or waits out the server's Retry-After, when it gives one). The
probes are spaced an eighth of the time the block has lasted (at least ``PROBE_FIRST``): a
few dozen at most even for a one-minute window, and the reset is timed within 1/16 of it,
halfway between the last refused probe and the successful one. A success after a block of
at least ``LONG`` s means the limit has reset. Between two resets lie whole windows (their
successes and their length), the one measure of such a limit that does not depend on where in
a window we look: the pace becomes ``SHARE`` of it, evenly spread, so later windows do not fill
up. Before the second reset (the run began somewhere inside the first window) the measure
since the run's start is only a first guess.
"""

from __future__ import annotations

RUN = 5  # consecutive 429s that make a block (random faults at 5 % do this once in 3e6)
PROBE_FIRST = 0.1
PROBE_SPACING = 0.125  # of the block's length so far
PROBE_CAP = 5.0
SHARE = 0.95  # of a measured window's rate: room for the error in timing the resets
LONG = 0.15  # s: a block its first probe ends (0.1 s) is a refilling bucket's, or a blip


class Blockade:
    """Detects blocks and resets; measures a window's rate from reset to reset."""

    def __init__(self) -> None:
        self.blocked = False
        self.run = 0  # consecutive 429s
        self.interval = PROBE_FIRST
        self.next_probe = 0.0
        self.cycle: float | None = None  # seconds between the last two resets
        self.reset_at: float | None = None
        self.first_reset: float | None = None
        self.served = 0  # successes since the last reset (or since the start)
        self.served_whole = 0  # successes between the first and the last reset
        self._refused_at = 0.0
        self._since = 0.0
        self._probe_refused = False  # a probe of this block was refused: it is no blip

    def refused(self, now: float, retry_after: float | None) -> float | None:
        """A 429: the time the next probe may go if this starts or prolongs a block, else None."""
        self.run += 1
        self._refused_at = now
        if not self.blocked:
            if self.run < RUN:
                return None
            self.blocked = True
            self.interval = PROBE_FIRST
            self._since = now
            self._probe_refused = False
        elif now >= self.next_probe:  # a probe was refused (earlier ones were in flight before)
            self.interval = min(max((now - self._since) * PROBE_SPACING, PROBE_FIRST), PROBE_CAP)
            self._probe_refused = True
        else:
            return self.next_probe
        wait = retry_after if retry_after is not None else self.interval
        self.next_probe = now + wait
        return self.next_probe

    def succeeded(self, now: float, started: float) -> tuple[float | None, bool] | None:
        """A success. Ending a long block, it returns (the rate measured since the last
        reset, whether that measure covers a whole window); otherwise None."""
        self.run = 0
        # a blip, not a reset: short, or ended by an answer to a request sent before the block
        # (a burst of fast 429s ahead of slower answers, as random 429s give at a run's start)
        if not self.blocked or now - self._since < LONG or not self._probe_refused:
            self.blocked = False
            self.served += 1
            return None
        self.blocked = False
        reset = (now + self._refused_at) / 2 if self._refused_at else now
        whole = self.reset_at is not None
        if whole:
            self.cycle = reset - self.reset_at
            self.served_whole += self.served
            served, span = self.served_whole, reset - self.first_reset
        else:
            self.first_reset = reset
            served, span = self.served, reset - started
        rate = served / span if span > 0 and served else None
        self.reset_at = reset
        self.served = 1
        return rate, whole

    def __repr__(self) -> str:
        state = f"blocked, probe every {self.interval:.2f}s" if self.blocked else "open"
        cycle = f", window {self.cycle:.1f}s" if self.cycle else ""
        return f"Blockade({state}{cycle})"
