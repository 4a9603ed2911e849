"""A dollar ledger that makes "never exceed the budget" hold at any concurrency.

Before a request is sent its worst case (input tokens plus max_tokens at the model's price) is
reserved; when the answer arrives the reservation is settled to the real cost. A request is
sent only if spent + reserved + its worst case stays within the limit. A request whose fate is
unknown (timed out, connection dropped after sending) may still have been billed, so its
reservation stays counted as spent: the ledger errs on the side of the user's money.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .numbers import money
from .types import Usage

PriceFn = Callable[[Usage], float]


class _Account:
    """The money itself; several ledgers (one per model, each with its own prices) can share it."""

    def __init__(self, limit: float | None, warn_at: float) -> None:
        self.limit = limit
        self.warn_at = warn_at
        self.spent = 0.0  # settled, real cost
        self.uncertain = 0.0  # worst cases of requests whose billing we cannot know
        self.reserved = 0.0  # worst cases of requests in flight
        self.holds = 0  # how many requests hold a reservation (floats cannot say "none")
        self.warned = False
        self.settled = asyncio.Event()


def _shared(name: str) -> property:
    return property(lambda self: getattr(self._account, name),
                    lambda self, value: setattr(self._account, name, value))


class Ledger:
    def __init__(self, limit: float | None, price: PriceFn, warn_at: float = 0.8,
                 *, account: _Account | None = None) -> None:
        self._account = account or _Account(limit, warn_at)
        self.price = price

    limit = _shared("limit")
    warn_at = _shared("warn_at")
    spent = _shared("spent")
    uncertain = _shared("uncertain")
    reserved = _shared("reserved")
    holds = _shared("holds")
    warned = _shared("warned")

    @property
    def _settled(self) -> asyncio.Event:
        return self._account.settled

    def share(self, price: PriceFn) -> Ledger:
        """A ledger over the same money at other prices (``model=[...]`` under one budget)."""
        return Ledger(self.limit, price, account=self._account)

    @property
    def committed(self) -> float:
        return self.spent + self.uncertain + self.reserved

    def try_reserve(self, worst: float) -> bool:
        if self.limit is not None and self.committed + worst > self.limit + 1e-12:
            return False
        self.reserved += worst
        self.holds += 1
        return True

    def _release(self, worst: float) -> None:
        self.holds -= 1
        self.reserved = max(0.0, self.reserved - worst) if self.holds else 0.0

    async def wait_for_settlement(self) -> None:
        """Wait until an in-flight reservation is settled (it may free room)."""
        self._settled.clear()
        await self._settled.wait()

    def wake(self) -> None:
        """Wake whoever waits for a settlement (the run stopped: they give up their turn)."""
        self._settled.set()

    def settle(self, worst: float, usage: Usage | None) -> float:
        """Replace a reservation by the real cost of ``usage`` (None: nothing was billed)."""
        self._release(worst)
        cost = self.price(usage) if usage is not None else 0.0
        self.spent += cost
        self._settled.set()
        return cost

    def keep_uncertain(self, worst: float) -> None:
        """The request may have been billed: keep counting its worst case."""
        self._release(worst)
        self.uncertain += worst
        self._settled.set()

    def crossed_warning(self) -> str | None:
        """The warning to give, once, when committed spend first passes ``warn_at`` of the
        limit; None before and after."""
        if self.limit and not self.warned and self.spent + self.uncertain >= self.warn_at * self.limit:
            self.warned = True
            return (f"{self.warn_at:.0%} of the budget is committed ({money(self.spent)} of "
                    f"{money(self.limit)})")
        return None

    def __repr__(self) -> str:
        lim = "none" if self.limit is None else money(self.limit)
        return (
            f"Ledger(limit={lim}, spent={money(self.spent)}, reserved={money(self.reserved)}, "
            f"uncertain={money(self.uncertain)})"
        )
