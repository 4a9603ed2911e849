"""``pilot=N``: which rows the pilot sends. A few evenly spread rows, run for real before the
rest, measure the template's real output lengths (``runs.pilot`` runs them; the estimate
extrapolates from their usage)."""

from __future__ import annotations


def positions(n: int, size: int) -> list[int]:
    """Evenly spread rows, so a sorted frame still gives a representative pilot."""
    size = min(size, n)
    return sorted({int(i * n / size) for i in range(size)}) if size else []
