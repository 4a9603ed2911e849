"""What a finished run tells its caller beyond the result: one warning for the rows skipped
for a missing value (how many, which columns) and the rows that failed (how many, the
commonest reasons), and the note a run-stopping error carries about what finished.

Shared by chat (``apply``) and embeddings (``embed``), so both say it the same way."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from .numbers import count, plural
from .prompts import MissingValue

TOP_REASONS = 3
NOT_SENT = "not sent: "  # how every errors.NotSent message begins
TOO_LONG_END = ": not sent"  # how the message of a prompt refused for its length ends
REASON_CHARS = 200  # a provider's message can be long; the error column has it whole


def _short(reason: str) -> str:
    line = " ".join(reason.split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"


def row_warning(row_errors: Sequence[str | None], fields: Iterable[str], *,
                failed: str = "have no answer", where: str = "",
                answers: Sequence[object] | None = None) -> str | None:
    """One message for a run's skipped and failed rows, or None when every row was answered:
    how many, the columns with missing values, the commonest reasons. ``failed`` words the
    outcome ("have no embedding"), ``where`` says where each row's reason is. ``answers``: a
    row with one is not counted whatever its error says (an answer cut at max_tokens keeps
    its text; its own warning says so)."""
    skip_reasons = {str(MissingValue(f)): f for f in fields}
    skipped: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    unsent: Counter[str] = Counter()
    too_long: Counter[str] = Counter()
    for i, e in enumerate(row_errors):
        if e is None or (answers is not None and answers[i] is not None):
            continue
        if e in skip_reasons:
            skipped[skip_reasons[e]] += 1
        elif e.startswith(NOT_SENT):  # errors.NotSent: the run stopped before sending it
            unsent[e[len(NOT_SENT):]] += 1
        elif e.endswith(TOO_LONG_END) and "exceeds" in e:  # refused before sending (chat, embed)
            too_long[e] += 1
        else:
            failures[e] += 1
    if not skipped and not failures and not unsent and not too_long:
        return None
    total = sum(skipped.values()) + sum(failures.values()) + sum(unsent.values()) + sum(too_long.values())
    lines = [f"{count(total)} of {plural(len(row_errors), 'row')} {failed}{where}:"]
    if skipped:
        by_column = ", ".join(f"{c!r} ({count(k)})" for c, k in skipped.most_common())
        lines.append(f"{count(sum(skipped.values()))} skipped, not sent, for a missing value in "
                     f"column {by_column} (missing='empty' sends them with an empty field)")
    for words, reasons in (("skipped, too long for the model", too_long), ("failed", failures),
                           ("not sent", unsent)):
        if reasons:
            top = "; ".join(f"{_short(r)} ({count(k)})" for r, k in reasons.most_common(TOP_REASONS))
            more = len(reasons) - TOP_REASONS
            lines.append(f"{count(sum(reasons.values()))} {words}; commonest reasons: {top}"
                         + (f"; and {plural(more, 'other reason')}" if more > 0 else ""))
    return "\n  ".join(lines)


def stop_note(report: Any) -> str:
    """What finished before a run-wide fault stopped the run, and where it is."""
    acc = report.accounting()
    return (f"The run stopped early: {count(acc.answered)} of {plural(acc.rows, 'row')} "
            f"answered, {count(acc.failed_total)} failed, {count(acc.skipped_total)} skipped, "
            f"{count(acc.not_sent_total)} not sent. "
            "Every row is in this error's .result (also llmbatch_pd.last_result()), the figures "
            "in .report.")


def raised_stop(err: Any, result: Any, report: Any) -> Any:
    """``err`` (why a run stopped, or None) ready to raise with what finished attached, when it
    is a run-wide fault (a ``FatalError``); None when the run ended otherwise."""
    return err.after_run(stop_note(report), result, report) if err is not None and err.fatal else None
