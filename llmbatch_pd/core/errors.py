"""Errors, and what the engine should do about each.

    LLMBatchError
    ├── InputError (ValueError)        bad input, raised before any request is sent
    │   └── TemplateError              a template field that cannot be rendered safely
    ├── BudgetError                    the estimate alone is above the budget
    ├── RunInterrupted (KeyboardInterrupt)  Ctrl+C / kernel interrupt; finished rows kept
    └── ProviderError                  the provider's answer (or lack of one) for one request
        ├── RetryableError             try again later: retryable = True
        │   ├── RateLimitError         429
        │   ├── OverloadedError        529 and 503-style overload
        │   ├── ServerError            other 5xx, 408, 409
        │   ├── TransportError         connection reset, refused, DNS
        │   ├── RequestTimeout         no answer within the per-request timeout
        │   └── MalformedResponse      a 2xx whose body we cannot read
        ├── RowError                   this row's request is wrong; others may be fine
        │   ├── BadRequestError        400, 404, 413, 422
        │   ├── ContextLengthError     prompt longer than the model's context window
        │   ├── InvalidOutput          an answer that does not fit schema= (asked again a
        │   │                          bounded number of times, then the row's error)
        │   ├── BudgetReached          sending this row would cross the budget
        │   └── NotSent                never sent: the run stopped first (cancel, budget, a stop)
        └── FatalError                 nothing else will work either: stop the run
            ├── AuthenticationError    401, 403
            ├── QuotaExceededError     429 insufficient_quota
            ├── ProviderDown           the circuit breaker gave up on a failing provider
            ├── RepeatedFailure        the same 400/404 on the first rows (unknown model)
            ├── StructuredOutputIgnored  the first rows' answers never fit schema=
            └── HostUnreachable        the first request could not reach base_url at all

A FatalError that stopped a run is raised after it with ``.result`` (the rows that finished)
and ``.report``.

Retryability is a property of the class, read by one retry policy (``transport.retry.Tries``,
for real-time rows and batch calls alike), so the provider decides *what* happened and the
transport alone decides *what to do*.
"""

from __future__ import annotations


class LLMBatchError(Exception):
    """Base of every error this library raises."""


class InputError(LLMBatchError, ValueError):
    """Bad arguments or data, detected before any money is spent."""


class TemplateError(InputError):
    """A template that cannot be rendered safely against the columns."""


class BudgetError(LLMBatchError):
    """The run was not started: its expected cost is above the budget."""


class RunInterrupted(LLMBatchError, KeyboardInterrupt):
    """The run was interrupted; ``result`` holds the rows that had finished."""

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result

    def _render_traceback_(self) -> list[str]:
        """What IPython shows (it asks for this instead of the frames): the user stopped the
        run, so the message and where the finished rows are, not a walk through the library."""
        return [f"RunInterrupted: {self}"]


class ProviderError(LLMBatchError):
    """One request did not produce an answer.

    ``kind`` is a short stable label for counts and reports ("429", "5xx", "timeout", ...).
    Raised by ``df.llm.apply`` (a :class:`FatalError` that stopped the run), it carries what
    finished: ``result`` (the partial DataFrame, or embed's vectors) and ``report``.
    """

    retryable = False
    fatal = False
    kind = "error"
    result: object = None
    report: object = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        if kind is not None:
            self.kind = kind

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message

    def after_run(self, note: str, result: object, report: object) -> ProviderError:
        """A copy for the caller of the run it stopped: ``note`` (what finished) added to the
        message, the partial ``result`` and the ``report`` attached. A copy, so raising it
        twice (``job.result()`` again) never adds the note twice."""
        err = type(self).__new__(type(self))
        err.__dict__.update(self.__dict__)
        err.message = f"{self.message}\n{note}"
        err.args = (err.message,)
        err.result, err.report = result, report
        return err


class RetryableError(ProviderError):
    retryable = True


class RateLimitError(RetryableError):
    kind = "429"


class OverloadedError(RetryableError):
    kind = "529"


class ServerError(RetryableError):
    kind = "5xx"


class TransportError(RetryableError):
    kind = "connection"


class RequestTimeout(RetryableError):
    kind = "timeout"


class MalformedResponse(RetryableError):
    kind = "malformed"


class RowError(ProviderError):
    kind = "bad request"


class BadRequestError(RowError):
    pass


class ContextLengthError(RowError):
    kind = "too long"


class InvalidOutput(RowError):
    kind = "invalid output"


class BudgetReached(RowError):
    kind = "budget"


class NotSent(RowError):
    """A request the run never sent because it stopped first (a cancel, the budget, a fatal
    error): its rows count as "not sent", apart from the rows that failed. The message says
    why: ``not sent: <why the run stopped>``."""

    kind = "stopped"

    def __init__(self, why: object, *, kind: str | None = None) -> None:
        super().__init__(f"not sent: {why}", kind=kind)


class FatalError(ProviderError):
    fatal = True


class AuthenticationError(FatalError):
    kind = "auth"


class QuotaExceededError(FatalError):
    kind = "quota"


class ProviderDown(FatalError):
    kind = "down"


class RepeatedFailure(FatalError):
    """The first answers all failed the same way and nothing has succeeded (an unknown model,
    a gateway's misconfiguration): every other row would fail, and be paid, the same way."""

    kind = "repeated"


class StructuredOutputIgnored(FatalError):
    """The first rows' answers never fitted ``schema=``, even when asked again: the server
    seems to ignore structured output, so every row would be paid several times for nothing."""

    kind = "schema ignored"


class HostUnreachable(FatalError):
    """The first request could not reach the host at all (DNS, connection refused)."""

    kind = "unreachable"
