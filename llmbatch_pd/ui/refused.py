"""The card shown when the budget refuses a run (``BudgetError``): red, with the reason and
the estimate it was judged on, instead of a traceback through the library's internals.

The accessor shows it just before it raises (the exception still goes up, carrying the same
message): ``except BudgetError as exc: show_refused(exc); raise``. The estimate comes from
``exc.estimate`` (and the budget from ``exc.budget``) when the raiser attached them; else the
card shows the figures the message itself carries.
"""

from __future__ import annotations

from typing import Any

from ..core.figures import mode_of
from . import in_notebook
from .estimate_view import ways_html
from .lines import plan_lines
from .style import MUTED, RED, RED_TEXT, card_html, esc, header_html, one_line, table_html


def refused_html(error: BaseException, estimate: Any = None, *, budget: float | None = None) -> str:
    """The card for a run the budget refused: a red header, the reason in one paragraph, and
    the estimate it was judged on (when the error carries it)."""
    estimate = estimate if estimate is not None else getattr(error, "estimate", None)
    budget = budget if budget is not None else getattr(error, "budget", None)
    lines = [ln for ln in str(error).split("\n") if ln.strip() and not ln.startswith("Raise budget=")]
    detail = getattr(estimate, "model", "") or "not started"
    body = (f'<div style="margin:6px 0 4px 0;color:{RED_TEXT};font-weight:600;overflow-wrap:anywhere">'
            f'{esc(one_line(lines[0] if lines else error))}</div>')
    if estimate is not None:
        body += table_html(plan_lines(estimate, budget=budget, mode=mode_of(None, estimate))) + ways_html(estimate)
    else:  # the figures the message carries, quieter than the reason
        body += "".join(f'<div style="color:{MUTED};overflow-wrap:anywhere">{esc(one_line(ln))}</div>'
                        for ln in lines[1:])
    body += (f'<div style="margin-top:6px;color:{MUTED};font-size:12px">Nothing was sent. Raise budget=, '
             f'lower max_tokens=, or use fewer rows.</div>')
    return card_html(f'<div style="border-left:4px solid {RED};padding-left:10px">'
                     + header_html("llmbatch_pd", detail, "refused: over budget", "bad") + body + "</div>")


def show_refused(error: BaseException) -> bool:
    """Show ``refused_html`` for a ``BudgetError`` in a notebook (the caller still raises it),
    and make the notebook's traceback of it one line. True when shown; nothing happens outside
    a Jupyter kernel (a terminal keeps the whole traceback)."""
    if not in_notebook():
        return False
    from IPython.display import HTML, display

    display(HTML(refused_html(error)))
    # IPython prints what an exception's ``_render_traceback_`` returns instead of the frames:
    # one line under the card rather than forty through the library's internals
    head = str(error).split("\n")[0]
    error._render_traceback_ = lambda: [f"\x1b[0;31m{type(error).__name__}\x1b[0m: {head} "  # type: ignore[attr-defined]
                                        "(the card above has the estimate; nothing was sent)"]
    return True


__all__ = ["refused_html", "show_refused"]
