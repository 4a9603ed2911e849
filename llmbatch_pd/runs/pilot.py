"""``pilot=N``: a few evenly spread rows (``planning.pilot``) run for real before the rest.
Their usage refines the estimate (and the budget check), their answers are handed to the main
run (nothing is paid twice), and a fatal stop (a bad key, a dead provider) stops it too."""

from __future__ import annotations

from typing import Any

from ..core import errors
from ..core.budget import Ledger
from ..planning import estimate as plan
from ..planning.pilot import positions
from .chat import Run
from .pack import make_run
from .spec import RunSpec


class Pilot:
    """The pilot of one model's run: ``read_rows(positions)`` reads the pilot's rows."""

    def __init__(self, spec: RunSpec, read_rows: Any, n: int, size: int) -> None:
        self.spec, self.read_rows = spec, read_rows
        self.positions = positions(n, size)  # the rows the pilot sends
        self.run: Run | None = None
        self.measured: plan.Pilot | None = None

    async def execute(self, ledger: Ledger | None, main: Run) -> None:
        """Run the pilot's rows; its answers, its spending and its stop go to ``main``."""
        chosen = self.positions
        run = make_run(self.spec, lambda: self.read_rows(chosen), len(chosen))
        run.keep_replies = True
        # known before it sends: cancel() stops it (its engine exists once execute() yields)
        self.run = run
        await run.execute(ledger)
        if run.engine is not None:  # its first answers' verdict stops what follows
            run.engine.conclude()
        self.spec.prefill = run.replies
        stats = main.stats
        if run.stats.stop_reason:  # a bad key or a dead provider: no point going on
            stats.stop_reason = run.stats.stop_reason
        for name in ("sent", "input_tokens", "output_tokens", "cost"):
            setattr(stats, name, getattr(run.stats, name))
        stats.by_kind.update(run.stats.by_kind)
        self.measured = run.as_pilot()
        if self.spec.pack == "auto" and self.measured.requests:  # the main run's packs sized on it
            self.spec.pack_output = self.measured.output_tokens / self.measured.requests

    def cancel(self, reason: str) -> None:
        """Stop the pilot if it is going."""
        if self.run is not None and self.measured is None:
            self.run.cancel(reason)

    @property
    def stop_error(self) -> errors.ProviderError | None:
        return self.run.stop_error if self.run is not None else None

    def keep_failures(self, main: Run) -> None:
        """A run the pilot stopped: the rows the pilot sent and lost keep their own reason
        (the 404 that stopped it), not "not sent"."""
        if self.run is None:
            return
        pilot = self.run
        for j, i in enumerate(self.positions):
            own, now = pilot.errors[j], main.errors[i]
            if pilot.answers[j] is None and own and not pilot.unsent[j] \
                    and main.answers[i] is None and now and main.unsent[i]:
                main.errors[i], main.unsent[i] = own, False
                main.report.not_sent -= 1
