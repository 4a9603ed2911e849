"""How quickly the library answers the user: the speed figures the tests no longer assert.

The tests check these behaviours by events and counts (submit() returns while the server
answers nothing; a SIGINT ends the run with no request sent after it; three models hold three
requests at the server at once). The times they used to assert, on a shared machine, are
measured here instead and printed as a table:

- ``submit()`` of 200 rows: seconds until it returns (the run goes on in the background);
- Ctrl+C: seconds from a SIGINT to the end of a script that is mid-run (2,000 rows, 20 at once);
- ``model=[3 models]``: the run's wall time against the sum of each model's own time.

    python benchmarks/responsiveness.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time

from _common import KEY, MODEL, REPO, machine_line, table

SCRIPT = textwrap.dedent(f"""
    import sys, pandas as pd, llmbatch_pd
    df = pd.DataFrame({{"t": [f"row {{i}}" for i in range(2000)]}})
    try:
        df.llm.apply("{{t}}", model="{MODEL}", base_url=sys.argv[1], api_key="{KEY}",
                     progress=False, concurrency=20, cache=False)
    except llmbatch_pd.RunInterrupted:
        sys.exit(0)
    sys.exit(1)
""")


def submit_return(sim) -> float:
    import pandas as pd

    df = pd.DataFrame({"t": [f"job row {i}" for i in range(200)]})
    started = time.perf_counter()
    job = df.llm.submit("Echo {t}", model=MODEL, base_url=sim.base_url, api_key=KEY,
                        progress=False, cache=False)
    took = time.perf_counter() - started
    job.result(timeout=120)
    return took


def interrupt(sim) -> float:
    sim.reset()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, sim.base_url], cwd=REPO)
    deadline = time.monotonic() + 120
    while len(sim.log) < 40:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the script never got 40 answers")
        time.sleep(0.01)
    started = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    took = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"the script was not interrupted cleanly (exit {code})")
    return took


def side_by_side(sim) -> tuple[float, float]:
    import pandas as pd

    df = pd.DataFrame({"t": [f"review {i}" for i in range(4)]})
    started = time.perf_counter()
    out = df.llm.apply("Classify as positive, negative or neutral: {t}",
                       model=["openai/gpt-4.1-mini", "anthropic/claude-haiku-4-5",
                              "openai/gpt-4.1-nano"],
                       base_url=sim.base_url, api_key=KEY, progress=False, concurrency=1,
                       cache=False)
    wall = time.perf_counter() - started
    return wall, sum(r.stats.elapsed for r in out.llm.report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import llmbatch_pd  # noqa: F401  (registers df.llm)
    from llmbatch_pd.sim import Simulator

    print(machine_line())
    submits, interrupts, walls, sums = [], [], [], []
    for _ in range(args.repeat):
        with Simulator(ttft_ms=5, api_key=KEY) as sim:
            submits.append(submit_return(sim))
        with Simulator(ttft_ms=200, api_key=KEY) as sim:
            interrupts.append(interrupt(sim))
        with Simulator(ttft_ms=150, api_key=KEY) as sim:
            wall, total = side_by_side(sim)
            walls.append(wall)
            sums.append(total)
    rows = [
        ["submit() of 200 rows returns", f"{statistics.median(submits) * 1000:.0f} ms",
         f"{max(submits) * 1000:.0f} ms"],
        ["SIGINT to the script's exit", f"{statistics.median(interrupts):.2f} s",
         f"{max(interrupts):.2f} s"],
        ["3 models x 4 rows, concurrency=1: wall", f"{statistics.median(walls):.2f} s",
         f"{max(walls):.2f} s"],
        ["  the same, one model after another (sum)", f"{statistics.median(sums):.2f} s",
         f"{max(sums):.2f} s"],
    ]
    print(f"\n{args.repeat} runs each\n")
    print(table(["measure", "median", "worst"], rows, right=[False, True, True]))
    print(f"\nload average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
