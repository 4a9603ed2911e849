"""Which fault, if any, hits a request: one seeded draw walked over the fault rates; and the
one fault that is not a response, a connection reset."""

from __future__ import annotations

import random
import socket
import struct
from typing import TYPE_CHECKING

from .config import FAULTS, SimConfig

if TYPE_CHECKING:
    from aiohttp import web


def pick_fault(rng: random.Random, config: SimConfig, *, structured: bool = False) -> str | None:
    """A fault name ("429", "5xx", "529", "hang", "reset", "malformed", "invalid_json") or None.

    A single draw per request keeps each fault's rate exactly as configured and makes the
    sequence of faults depend only on the seed and the order requests arrive in. Only a
    ``structured`` request (one asking for JSON) can get "invalid_json"; for the rest that
    share of draws is no fault, so the dice sequence is the same either way.
    """
    rates = [getattr(config, name) for name in FAULTS]
    if not any(rates):
        return None
    draw = rng.random()
    for name, rate in zip(FAULTS, rates, strict=True):
        if draw < rate:
            fault = name.removeprefix("fault_")
            return None if fault == "invalid_json" and not structured else fault
        draw -= rate
    return None


def reset_connection(request: web.Request) -> None:
    """Drop the TCP connection with an RST, as a crashed proxy would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
