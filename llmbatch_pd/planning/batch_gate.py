"""``model=[...]`` in batch mode: no model submits a job until every model's worst case is
reserved in the shared budget.

A batch job cannot be stopped part-way, so each model reserves its whole worst case before it
sends anything. Under one budget those reservations must all fit together: a model that
reserved first would otherwise submit (and pay) while a later model's reservation fails and
the call raises. Each model's runner passes the gate after reserving; the gate opens once
every model has reserved or left (nothing to send, or never started), and breaks (nobody
submits) if one failed.
"""

from __future__ import annotations

import asyncio


class BatchGate:
    """One gate for several batch runners sharing a budget: one ``party()`` each."""

    def __init__(self) -> None:
        self._left = 0
        self._broken = False
        self._open = asyncio.Event()

    def party(self) -> Party:
        self._left += 1
        return Party(self)

    def _arrive(self, failed: bool) -> None:
        self._broken |= failed
        self._left -= 1
        if self._left <= 0 or self._broken:
            self._open.set()


class Party:
    """One runner's place at the gate: it arrives once (``passed`` or ``leave``); later
    calls do nothing, so its owner can always ``leave`` when it ends."""

    def __init__(self, gate: BatchGate) -> None:
        self._gate: BatchGate | None = gate

    def leave(self, failed: bool = False) -> None:
        """This runner will not submit (nothing to send, never started, or it failed)."""
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._arrive(failed)

    async def passed(self) -> None:
        """Wait until every runner has reserved or left; CancelledError if one failed."""
        gate, self._gate = self._gate, None
        if gate is None:
            return
        gate._arrive(False)
        await gate._open.wait()
        if gate._broken:
            raise asyncio.CancelledError("another model's budget check failed: nothing sent")
