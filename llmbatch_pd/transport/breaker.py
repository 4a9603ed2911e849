"""A circuit breaker: when the provider keeps failing, stop hammering it.

After ``threshold`` server-side failures in a row (5xx, 529, timeouts, dropped connections,
with no success between them) the circuit opens: nothing is sent for ``cooldown`` seconds,
then one probe goes out. A successful probe closes the circuit and the run carries on; a failed
one doubles the cooldown. After ``max_probes`` failed probes the provider is taken to be down
and the run stops, keeping every row that finished.

Random faults at a few percent never open it: 25 failures in a row at a 2 % fault rate has a
probability of about 10^-42.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class CircuitBreaker:
    def __init__(
        self,
        threshold: int = 25,
        cooldown: float = 2.0,
        max_probes: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.max_probes = max_probes
        self._clock = clock
        self.consecutive = 0
        self.state = "closed"  # closed -> open -> half-open (one probe in flight) -> ... -> down
        self.failed_probes = 0
        self.opened = 0  # how many times it opened, for the report
        self._reopen_at = 0.0
        self._closed = asyncio.Event()
        self._closed.set()

    async def admit(self) -> bool:
        """Wait until a request may be sent; True if this request is the probe."""
        while True:
            if self.state in ("closed", "down"):
                return False
            if self.state == "open":
                delay = self._reopen_at - self._clock()
                if delay <= 0:
                    self.state = "half-open"
                    return True
                try:
                    await asyncio.wait_for(self._closed.wait(), timeout=delay)
                except TimeoutError:
                    pass
                continue
            await self._closed.wait()  # half-open: wait for the probe's outcome

    def on_success(self) -> None:
        self.consecutive = 0
        if self.state != "closed":
            self.state = "closed"
            self.failed_probes = 0
            self._closed.set()

    def on_failure(self, probe: bool) -> bool:
        """Count a server-side failure; True when the provider is judged down."""
        self.consecutive += 1
        if probe:
            self.failed_probes += 1
            if self.failed_probes >= self.max_probes:
                self.release()
                return True
            self._open(self.cooldown * 2**self.failed_probes)
        elif self.state == "closed" and self.consecutive >= self.threshold:
            self.opened += 1
            self._open(self.cooldown)
        return False

    def release(self) -> None:
        """Given up (or the run stopped): let every waiter through to see the stop."""
        self.state = "down"
        self._closed.set()

    def _open(self, cooldown: float) -> None:
        self.state = "open"
        self._reopen_at = self._clock() + cooldown
        self._closed.clear()

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker({self.state}, {self.consecutive} failures in a row, "
            f"{self.failed_probes}/{self.max_probes} probes failed)"
        )
