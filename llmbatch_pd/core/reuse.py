"""When an answer may stand for a request: complete, cut at max_tokens, or no longer valid.

A complete answer is the same answer whatever ``max_tokens`` the request carries, so the cache
key leaves the limit out (``budget=``, which sets one as a bound, finds the same answers). An
answer cut at the limit is flagged on its row and reused only by a request with that same
limit, never as complete. A cached answer that ``schema=`` now refuses is asked again: it was
never usable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import InvalidOutput
from .numbers import plural
from .types import Reply


def truncation_note(limit: int | None) -> str:
    """The error column's words for an answer cut at the output limit (its text is kept)."""
    if limit:
        return f"truncated at max_tokens={limit}"
    return "truncated at the model's output limit"


def truncation_warning(rows: int) -> str:
    return (f"{plural(rows, 'answer')} {'was' if rows == 1 else 'were'} cut at the output limit (their rows say so in the error "
            "column, the text is kept): raise max_tokens= to have them whole")


def reusable(hit: Reply, limit: int | None, user_limit: int | None,
             check: Callable[[str], Any] | None) -> bool:
    """Whether a cached answer answers a request sent with output limit ``limit`` (what goes
    on the wire, defaults included); ``user_limit`` is ``max_tokens=`` as the user gave it."""
    if hit.truncated:
        if hit.limit != limit:
            return False  # another limit: a fresh answer may be complete, or cut elsewhere
    elif user_limit is not None and hit.usage.output_tokens > user_limit:
        return False  # longer than the user now allows: a fresh answer would be cut
    if check is not None and hit.text is not None:
        try:
            check(hit.text)
        except InvalidOutput:
            return False
    return True
