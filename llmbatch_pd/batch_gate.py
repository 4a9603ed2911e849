"""``model=[...]`` in batch mode: no model submits a job until every model's worst case is
reserved in the shared budget.

A batch job cannot be stopped part-way, so each model reserves its whole worst case before it
sends anything. Under one budget those reservations must all fit together: a model that
reserved first would otherwise submit (and pay) while a later model's reservation fails and
the call raises. Each model's runner passes the gate after reserving; the gate opens once
every model has reserved or has nothing to send, and breaks (nobody submits) if one fails.
"""

from __future__ import annotations

import asyncio


class BatchGate:
    """One gate for ``parties`` batch runners sharing a budget."""

    def __init__(self, parties: int) -> None:
        self._left = parties
        self._broken = False
        self._open = asyncio.Event()

    def leave(self, failed: bool = False) -> None:
        """A runner that will not submit (nothing to send, or its reservation failed)."""
        self._broken |= failed
        self._arrive()

    async def passed(self) -> None:
        """Wait until every runner has reserved; raises CancelledError if one failed."""
        self._arrive()
        await self._open.wait()
        if self._broken:
            raise asyncio.CancelledError("another model's budget check failed: nothing sent")

    def _arrive(self) -> None:
        self._left -= 1
        if self._left <= 0 or self._broken:
            self._open.set()
