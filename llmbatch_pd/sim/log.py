"""The request log and running counters, cheap enough for 100,000-request runs.

Entries are plain dicts appended to a list; the counters are kept apart from the list so
``stats()`` still works, in O(1), with the log switched off.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


class RequestLog:
    """What the simulator did with each request, plus counts by status and fault."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.by_status: Counter[str] = Counter()
        self.by_fault: Counter[str] = Counter()
        self.total = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def started(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def finished(self, entry: dict[str, Any], keep: bool) -> None:
        """Count a finished request; a status of None means no response was sent."""
        self.in_flight -= 1
        self.total += 1
        status = entry["status"]
        self.by_status["none" if status is None else str(status)] += 1
        if entry["fault"] is not None:
            self.by_fault[entry["fault"]] += 1
        if keep:
            self.entries.append(entry)

    def clear(self) -> None:
        """Forget everything finished; requests still in flight stay counted as such."""
        self.entries.clear()
        self.by_status.clear()
        self.by_fault.clear()
        self.total = 0
        self.max_in_flight = self.in_flight

    def stats(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_status": dict(self.by_status),
            "by_fault": dict(self.by_fault),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    def __repr__(self) -> str:
        return f"RequestLog(total={self.total}, in_flight={self.in_flight})"
