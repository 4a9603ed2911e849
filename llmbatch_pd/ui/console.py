"""A tqdm bar for terminals and scripts, with the key figures in its postfix."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    from ..run import RunReport


class ConsoleProgress:
    def __init__(self, report: RunReport, *, file=None) -> None:
        self.report = report
        self.bar = tqdm(total=report.rows, desc=report.model, unit="row", file=file,
                        dynamic_ncols=True, mininterval=0.25, smoothing=0.1)

    def update(self) -> None:
        r, s = self.report, self.report.stats
        self.bar.n = r.finished_rows
        post = {"ok": r.answered_rows, "failed": r.failed_rows}
        if s.retrying:
            post["retrying"] = s.retrying
        for kind in ("429", "5xx", "529", "timeout"):
            if s.by_kind.get(kind):
                post[kind] = s.by_kind[kind]
        if s.cost:
            post["$"] = f"{s.cost:.4f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.update()
        self.bar.close()
