"""``pilot=N``: which rows the pilot sends. A few evenly spread rows, run for real before the
rest, measure the template's real output lengths (``runs.pilot`` runs them; the estimate
extrapolates from their usage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def positions(n: int, size: int) -> list[int]:
    """Evenly spread rows, so a sorted frame still gives a representative pilot."""
    size = min(size, n)
    return sorted({int(i * n / size) for i in range(size)}) if size else []


@dataclass(frozen=True)
class Agreement:
    """``estimate(pilot=N, pack=k)``: the pilot's rows answered packed and one by one, side by
    side. ``rate``: the share of rows whose answers are the same (every field, with
    ``schema=``); ``fields``: that share per field; the two ways' measured costs."""

    rows: int  # rows both ways answered
    agreed: int
    fields: dict[str, float]
    packed_cost: float
    single_cost: float

    @property
    def rate(self) -> float | None:
        return self.agreed / self.rows if self.rows else None

    @property
    def saving(self) -> float | None:
        """The share of the one-by-one cost that packing saved on the pilot's rows."""
        return 1 - self.packed_cost / self.single_cost if self.single_cost > 0 else None

    def summary(self) -> str:
        if not self.rows:
            return "packed vs one by one: no row answered both ways"
        text = f"packed vs one by one on {self.rows} pilot rows: {self.rate:.0%} agree"
        if len(self.fields) > 1:
            text += " (" + ", ".join(f"{name} {share:.0%}" for name, share in self.fields.items()) + ")"
        if self.saving is not None:
            text += (f", {self.saving:.0%} cheaper packed" if self.saving >= 0
                     else f", {-self.saving:.0%} dearer packed")
        return text


def agreement(packed: Sequence[Any], single: Sequence[Any], packed_cost: float, single_cost: float,
              fields: Sequence[str] = ()) -> Agreement:
    """Compare the answers row by row (None: no answer, left out). Text answers agree when
    equal after trimming white space; with ``fields`` (``schema=``) the answers are dicts and
    each field is compared on its own."""
    pairs = [(p, s) for p, s in zip(packed, single, strict=True) if p is not None and s is not None]
    if fields:
        per = {name: sum(p.get(name) == s.get(name) for p, s in pairs) for name in fields}
        agreed = sum(all(p.get(name) == s.get(name) for name in fields) for p, s in pairs)
        shares = {name: n / len(pairs) for name, n in per.items()} if pairs else {}
    else:
        agreed = sum(str(p).strip() == str(s).strip() for p, s in pairs)
        shares = {"answer": agreed / len(pairs)} if pairs else {}
    return Agreement(len(pairs), agreed, shares, packed_cost, single_cost)
