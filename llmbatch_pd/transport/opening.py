"""Judging a run by its first answers, before anything has succeeded.

Some faults look like row errors but are run-wide: an unknown model (OpenAI's 404
``model_not_found``), a gateway's "No connected db", a server that ignores ``response_format``,
a host that cannot be reached at all. Every row would fail the same way, and most would be paid.
So until one usable answer has come back the engine sends rows one at a time (at most
``PROBATION`` of them) and this judge turns a pattern into a ``FatalError``:

- ``SAME`` (3) rows failing with the same HTTP answer, nothing succeeded: ``RepeatedFailure``.
  Three, not one or two: a single 400 is most often that row's own fault (its content, its
  length), and two equal ones can be chance; a third identical one with no success at all is
  the run's fault, at a cost of three requests.
- ``SAME`` rows whose answers never fitted ``schema=`` even when asked again:
  ``StructuredOutputIgnored`` (``SAME`` x (1 + schema_retries) requests).
- ``SAME`` rows whose answers were cut at the output limit before they fitted ``schema=``
  (never asked again: the same limit would cut them again): ``RepeatedFailure`` naming
  ``max_tokens``. Not "the server ignores structured output": the limit is the cause.
- the first request failing to connect twice (DNS, refused, connect timeout), the host never
  reached: ``HostUnreachable``, naming the URL (never the key).
"""

from __future__ import annotations

from yarl import URL

from ..core import errors
from ..core.reuse import truncation_note

SAME = 3
PROBATION = 5  # rows sent one at a time while nothing has succeeded
CONNECT_RETRIES = 1  # one retry (after the first backoff, ~0.5 s) of a first connection: a blip


def where(base_url: str) -> str:
    """The URL to name in a message: no user info (it may hold a credential), no query."""
    try:
        url = URL(base_url)
        return str(url.with_user(None).with_password(None).with_query(None))
    except ValueError:
        return "the configured base_url"


class Opening:
    """Counts the first answers; says when they amount to a run-wide fault."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.succeeded = False  # a usable answer came back
        self.reached = False  # the host answered something (any HTTP status)
        self.rows_failed = 0
        self._same: tuple[type, int | None, str] | None = None
        self._same_count = 0
        self._unusable = 0
        self._cut = 0

    @property
    def on_probation(self) -> bool:
        """Send one row at a time: nothing has succeeded yet."""
        return not self.succeeded and self.rows_failed < PROBATION

    def answered(self) -> None:
        self.reached = True

    def usable(self) -> None:
        self.succeeded = True

    def connect_failed(self, exc: errors.ProviderError, attempt: int) -> errors.FatalError | None:
        """A connection that never opened; fatal when the host has never been reached."""
        if self.reached or attempt < CONNECT_RETRIES:
            return None
        return errors.HostUnreachable(
            f"cannot reach {where(self.base_url)} ({exc}): nothing was sent. Check base_url= "
            "and the network (a proxy, VPN or firewall?)"
        )

    def row_cut(self, exc: errors.ProviderError, limit: int | None) -> errors.FatalError | None:
        """A row whose answer was cut at ``limit`` before it fitted ``schema=``; fatal when the
        first ones are all cut (every row would be paid for an answer too short to use)."""
        self.rows_failed += 1
        if self.succeeded:
            return None
        self._cut += 1
        if self._cut < SAME:
            return None
        return errors.RepeatedFailure(
            f"the first {self._cut} answers were all cut at the output limit "
            f"({truncation_note(limit)}) before they fitted schema=, and none succeeded, so "
            f"every row would be: raise max_tokens=. Last: {exc}"
        )

    def row_failed(self, exc: errors.ProviderError) -> errors.FatalError | None:
        """A row's final failure; fatal when the first ones all say the same thing."""
        self.rows_failed += 1
        if self.succeeded:
            return None
        if isinstance(exc, errors.InvalidOutput):
            self._unusable += 1
            if self._unusable >= SAME:
                return errors.StructuredOutputIgnored(
                    f"the first {self._unusable} rows' answers did not fit schema=, even when "
                    "asked again: the server seems to ignore structured output "
                    f"(response_format). Last: {exc}"
                )
            return None
        if exc.status is None or exc.retryable or exc.fatal:
            return None  # not an answer the server gave to every row alike
        key = (type(exc), exc.status, exc.message)
        self._same_count = self._same_count + 1 if key == self._same else 1
        self._same = key
        if self._same_count >= SAME:
            return errors.RepeatedFailure(
                f"the first {self._same_count} requests all failed with the same answer and "
                f"none succeeded, so every row would: {exc}"
            )
        return None
