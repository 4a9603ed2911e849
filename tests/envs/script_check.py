"""A plain script that uses llmbatch_pd the way a user's script would; run by test_environments.

    python script_check.py run                    apply, aapply in asyncio.run, apply in a coroutine
    python script_check.py interrupt sync URL N     Ctrl+C during df.llm.apply (N at a time)
    python script_check.py interrupt async URL N    Ctrl+C during asyncio.run(df.llm.aapply(...))
    python script_check.py interrupt gather URL N   Ctrl+C during two aapply runs at once, after
                                                    the short one has finished

Everything goes over real HTTP to a loopback Simulator: ``run`` starts its own, ``interrupt``
uses the test's (at URL), so the test can send SIGINT once requests are being answered and
count what arrives after. After the interrupt, one row goes to PROBE_MODEL (the engine still
works; a run that went on would send during it). The last line printed is a JSON object that
the test reads.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import pandas as pd

import llmbatch_pd
from llmbatch_pd.sim import Simulator

KEY = "sk-test-envcheck-0123456789"
MODEL = "openai/gpt-4.1-mini"
TEMPLATE = "Classify the sentiment of this review as positive, negative or neutral:\n{text}"
LABELS = {"positive", "negative", "neutral"}
PROBE_MODEL = "openai/gpt-4.1-nano"


def reviews(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"text": [f"review number {i}: {'great' if i % 3 else 'awful'} product" for i in range(n)]},
        index=pd.RangeIndex(100, 100 + n, name="rid"),
    )


def summary(out: pd.DataFrame) -> dict:
    return {
        "rows": len(out),
        "answered": int(out["llm_output"].notna().sum()),
        "errors": int(out["llm_output_error"].notna().sum()),
        "labels_ok": bool(set(out["llm_output"].dropna()) <= LABELS),
        "index_ok": list(out.index) == list(range(100, 100 + len(out))),
        "answers": out["llm_output"].tolist(),
    }


def run() -> dict:
    df = reviews(30)
    with Simulator(ttft_ms=5, api_key=KEY) as sim:
        opts = {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False}
        sync = df.llm.apply(TEMPLATE, **opts)

        async def main() -> pd.DataFrame:
            return await df.llm.aapply(TEMPLATE, **opts)

        async def sync_in_coroutine() -> tuple[bool, pd.DataFrame]:
            running = asyncio.get_running_loop() is not None
            return running, df.llm.apply(TEMPLATE, **opts)

        aout = asyncio.run(main())
        loop_was_running, nested = asyncio.run(sync_in_coroutine())
        requests = len(sim.log)
    return {
        "python": list(sys.version_info[:2]),
        "executable": sys.executable,
        "package": llmbatch_pd.__file__,
        "sync": summary(sync),
        "async": summary(aout),
        "nested": summary(nested),
        "loop_was_running": loop_was_running,
        "requests": requests,
    }


def interrupt(mode: str, base_url: str, concurrency: int) -> dict:
    """A ~20 s run against the test's simulator (200 ms a request), which the test interrupts
    once the simulator has answered a few dozen requests."""
    df = pd.DataFrame({"text": [f"row {i}" for i in range(2000)]})
    opts = {"model": MODEL, "base_url": base_url, "api_key": KEY, "progress": False,
            "concurrency": concurrency}
    raised = None
    try:
        if mode == "sync":
            df.llm.apply("Echo {text}", **opts)
        elif mode == "async":
            asyncio.run(df.llm.aapply("Echo {text}", **opts))
        else:
            short = pd.DataFrame({"text": [f"short {i}" for i in range(5)]})  # ~0.2 s

            async def both():
                return await asyncio.gather(df.llm.aapply("Echo {text}", **opts),
                                            short.llm.aapply("Echo {text}", **opts))

            asyncio.run(both())
    except KeyboardInterrupt as exc:
        raised = exc
    # The run has ended (not merely the call that was running it): the test counts its
    # requests at the simulator, which sees none from it during the probe or after.
    print("interrupted", flush=True)
    out, report = llmbatch_pd.last_result(), llmbatch_pd.last_report()
    probe = pd.DataFrame({"text": ["after the interrupt"]}).llm.apply(
        "Echo {text}", **{**opts, "model": PROBE_MODEL})
    errors = out["llm_output_error"].dropna() if out is not None else pd.Series([], dtype=object)
    return {
        "raised": type(raised).__name__ if raised else None,
        "is_run_interrupted": isinstance(raised, llmbatch_pd.RunInterrupted),
        "message": str(raised) if raised else None,
        "result_attr_rows": (len(raised.result) if getattr(raised, "result", None) is not None
                             else None),
        "rows": None if out is None else len(out),
        "answered": None if out is None else int(out["llm_output"].notna().sum()),
        # a row caught by the interrupt: on its way ("interrupted: ...") or never sent
        "cancelled": int(_interrupted(errors).sum()),
        "other_errors": sorted(set(errors[~_interrupted(errors)]))[:5],
        "interrupted_flag": bool(report and report.interrupted),
        "probe_ok": bool(probe["llm_output"].notna().all()),
    }


def _interrupted(errors: pd.Series) -> pd.Series:
    return errors.str.startswith(("interrupted:", "not sent: the run was interrupted"))


if __name__ == "__main__":
    # A terminal delivers Ctrl+C as SIGINT to a Python that turns it into KeyboardInterrupt.
    # A child of a non-interactive shell or of CI may inherit SIGINT as ignored; undo that so
    # the test's SIGINT means what Ctrl+C means.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.argv[1] == "run":
        result = run()
    else:
        result = interrupt(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    print(json.dumps(result), flush=True)
