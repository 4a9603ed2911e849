"""Which fault, if any, hits a request: one seeded draw walked over the fault rates."""

from __future__ import annotations

import random

from .config import FAULTS, SimConfig


def pick_fault(rng: random.Random, config: SimConfig) -> str | None:
    """A fault name ("429", "5xx", "529", "hang", "reset", "malformed") or None.

    A single draw per request keeps each fault's rate exactly as configured and makes the
    sequence of faults depend only on the seed and the order requests arrive in.
    """
    rates = [getattr(config, name) for name in FAULTS]
    if not any(rates):
        return None
    draw = rng.random()
    for name, rate in zip(FAULTS, rates, strict=True):
        if draw < rate:
            return name.removeprefix("fault_")
        draw -= rate
    return None
