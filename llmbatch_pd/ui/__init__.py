"""Progress displays and the static run summary. They read a run's counters and report; they
never call HTTP and never touch pandas.

``choose_display`` picks the display for the place the code runs in: the widget panel in a
Jupyter kernel that can show widgets, a tqdm bar anywhere else (terminal IPython, scripts, CI).
Given a list of reports (several models side by side, one run each under one budget) it picks
the group versions of both: one card (``group.GroupPanel``) or one bar (``GroupProgress``).

Importing this package registers the static renderings (``ui.report``) with
``core.report``: that is how a ``RunReport`` shows itself as text, HTML or Markdown while the
core never imports the UI (see ``core.report``'s docstring). The package's ``__init__`` imports
the accessor, which imports this package, so the registration happens whenever
``llmbatch_pd`` is imported.

The modules: ``style`` (the look, escaping), ``lines`` (figures as labelled lines), ``grid``
(the table of several models), ``report`` (the static summary in three formats), ``costs``
(money said honestly), ``console`` (tqdm bars), ``card``/``panel``/``group`` (the widgets),
``magics`` (the IPython extension: ``%%llm``, ``%llm_runs``; imported only by ``%load_ext``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ..core.report import register_renderers
from .console import ConsoleProgress, GroupProgress
from .report import (
    report_html,
    report_markdown,
    report_text,
    reports_html,
    reports_markdown,
    reports_text,
)

if TYPE_CHECKING:
    from ..core.report import RunReport
    from ..planning.estimate import Estimate
    from .group import GroupPanel
    from .panel import Panel

register_renderers(report_text=report_text, report_html=report_html, report_markdown=report_markdown,
                   reports_text=reports_text, reports_html=reports_html, reports_markdown=reports_markdown)

Progress = bool | None | Literal["auto", "widget", "tqdm"]
PROGRESS_CHOICES = (None, True, False, "auto", "widget", "tqdm")


def in_notebook() -> bool:
    """True inside a Jupyter kernel whose frontend can show widgets (as far as one can tell
    from the kernel side) and with ipywidgets importable."""
    ipython = sys.modules.get("IPython")
    if ipython is None:  # never import IPython just to find out: scripts stay light
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # pragma: no cover (a broken IPython install)
        return False
    if shell is None:
        return False
    kernel = any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)
    try:
        kernel = kernel or "IPKernelApp" in shell.config
    except Exception:  # pragma: no cover
        pass
    if not kernel or "spyder_kernels" in sys.modules:  # Spyder's console shows no widgets
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def choose_display(
    report: RunReport | Sequence[RunReport],
    estimate: Estimate | Sequence[Estimate | None] | None = None,
    budget: float | None = None,
    progress: Progress = None,
    *,
    on_cancel: Callable[[], Any] | None = None,
    on_run: Callable[[], Any] | None = None,
    background: bool = False,
    show: bool = True,
) -> Panel | ConsoleProgress | GroupPanel | GroupProgress | None:
    """The progress display for ``progress=``: ``False`` none; ``"widget"`` the panel;
    ``"tqdm"`` the bar; ``None``, ``True`` or ``"auto"`` the panel in a Jupyter kernel with
    ipywidgets, else the bar. The display is shown (with the estimate, if any) unless
    ``show=False``; drive it with ``update()`` and end it with ``close()``. ``on_run`` gives the
    panel a Run button (the run waits for it; the tqdm bar has none: call ``start()`` there);
    ``background`` marks a run that goes on while other cells run.

    Several models: ``report`` a list of RunReports (one per model) and ``estimate`` a list of
    Estimates or None entries in the same order (or None); ``budget`` is the one budget they
    share. The display is one card (or one bar) for all of them; ``on_cancel`` is called once
    and must cancel every run, ``on_run`` once starts them all."""
    if progress not in PROGRESS_CHOICES or (progress is not None and not isinstance(progress, (bool, str))):
        from ..core.errors import InputError

        raise InputError(f"progress= must be True, False, None, 'widget' or 'tqdm', not {progress!r}")
    if progress is False:
        return None
    kind = progress if progress in ("widget", "tqdm") else ("widget" if in_notebook() else "tqdm")
    group = isinstance(report, (list, tuple))
    if group:
        if estimate is not None and not isinstance(estimate, (list, tuple)):
            raise TypeError("with a list of reports, estimate= must be a list (one Estimate or None per report)")
        report = list(report)
    display: Panel | ConsoleProgress | GroupPanel | GroupProgress
    if kind == "widget":
        from .group import GroupPanel
        from .panel import Panel

        display = (GroupPanel if group else Panel)(report, estimate, budget, on_cancel=on_cancel, on_run=on_run,
                                                   background=background)
    else:
        display = (GroupProgress if group else ConsoleProgress)(report, estimate, budget)
    if show:
        display.show()
        if group or estimate is not None:  # a group's plans may be the ones its runs carry
            display.show_estimate()
    return display


__all__ = ["ConsoleProgress", "GroupProgress", "choose_display", "in_notebook", "report_html", "report_markdown",
           "report_text", "reports_html", "reports_markdown", "reports_text"]
