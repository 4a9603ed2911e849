"""How quickly the library answers the user: the speed figures the tests no longer assert.

The tests check these behaviours by events and counts (submit() returns while the server
answers nothing; a SIGINT ends the run with no request sent after it; three models hold three
requests at the server at once). The times they used to assert, on a shared machine, are
measured here instead and printed as a table:

- ``submit()`` of 200 rows: seconds until it returns (the run goes on in the background);
- Ctrl+C: seconds from a SIGINT to the end of a script that is mid-run (2,000 rows, 20 at once);
- Ctrl+C in the ``ipython`` REPL during the same run (sync ``apply``, top-level ``await
  aapply``): seconds from the SIGINT until the REPL runs the next input;
- a Jupyter kernel interrupt (the stop button) during the same run, as a sync ``apply`` and as a
  top-level ``await aapply``: seconds until the cell's reply (RunInterrupted);
- ``model=[3 models]``: the run's wall time against the sum of each model's own time.

    python benchmarks/responsiveness.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

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


def _answers(sim, n: int, running, what: str) -> None:
    """Wait (120 s at most) until the simulator has answered ``n`` requests."""
    deadline = time.monotonic() + 120
    while len(sim.log) < n:
        if time.monotonic() > deadline or not running():
            raise RuntimeError(f"{what} never got {n} answers")
        time.sleep(0.01)


def interrupt(sim) -> float:
    sim.reset()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, sim.base_url], cwd=REPO)
    try:
        _answers(sim, 40, lambda: proc.poll() is None, "the script")
    except RuntimeError:
        proc.kill()
        raise
    started = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=60)
    took = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"the script was not interrupted cleanly (exit {code})")
    return took


# The session, one statement a line (the ipython REPL takes it line by line); BASE_URL first.
SESSION = [
    "import pandas as pd, llmbatch_pd",
    'big = pd.DataFrame({"t": [f"row {i}" for i in range(2000)]})',
    f'opts = dict(model="{MODEL}", base_url=BASE_URL, api_key="{KEY}", progress=False, '
    "concurrency=20, cache=False)",
]
KERNEL_RUN = {"sync": 'big.llm.apply("{t}", **opts)', "await": 'await big.llm.aapply("{t}", **opts)'}


def kernel_interrupts(sim, modes=("sync", "await")) -> dict[str, float]:
    """One ipykernel (this Python's, importing this checkout) runs the 2,000-row run once per
    mode; each is interrupted once the simulator has answered 40 requests."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=str(REPO))
    kc = km.client()
    kc.start_channels()
    took = {}
    try:
        kc.wait_for_ready(timeout=60)
        setup = "\n".join([f"BASE_URL = {sim.base_url!r}", *SESSION])
        if kc.execute_interactive(setup, timeout=60)["content"]["status"] != "ok":
            raise RuntimeError("the kernel could not import llmbatch_pd")
        for mode in modes:
            sim.reset()
            msg_id = kc.execute(KERNEL_RUN[mode], stop_on_error=False)
            _answers(sim, 40, lambda: not kc.shell_channel.msg_ready(), f"the kernel ({mode})")
            started = time.perf_counter()
            km.interrupt_kernel()
            deadline = time.monotonic() + 60
            while True:
                try:
                    msg = kc.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    raise RuntimeError(f"the kernel interrupt ({mode}) did not end the cell") from None
                if msg["parent_header"].get("msg_id") == msg_id:
                    break
            took[mode] = time.perf_counter() - started
            if msg["content"].get("ename") != "RunInterrupted":
                raise RuntimeError(f"the cell ended with {msg['content']} ({mode})")
            while msg["msg_type"] != "status" or msg["content"]["execution_state"] != "idle" \
                    or msg["parent_header"].get("msg_id") != msg_id:
                msg = kc.get_iopub_msg(timeout=60)  # the cell is completely done
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return took


def ipython_interrupt(sim, mode: str) -> float:
    """The ``ipython`` REPL (next to this Python) fed the run on stdin, as a person would type it."""
    sim.reset()
    lines = [
        "import signal; signal.getsignal(signal.SIGINT) is signal.SIG_IGN and "
        "signal.signal(signal.SIGINT, signal.default_int_handler)",  # a child of CI may ignore it
        f"BASE_URL = {sim.base_url!r}",
        *SESSION,
        KERNEL_RUN[mode],
    ]
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ipython"), "--simple-prompt", "--no-banner",
             "--colors=NoColor", "--HistoryManager.hist_file=:memory:"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "IPYTHONDIR": profile})
        assert proc.stdin is not None and proc.stdout is not None
        killer = threading.Timer(120, proc.kill)  # a deadline on everything below
        killer.start()
        try:
            proc.stdin.write("\n".join(lines) + "\n")
            proc.stdin.flush()
            _answers(sim, 40, lambda: proc.poll() is None, f"ipython ({mode})")
            started = time.perf_counter()
            proc.send_signal(signal.SIGINT)
            proc.stdin.write('print("CHECK" + "POINT")\n')
            proc.stdin.close()
            seen = ""
            while "CHECKPOINT" not in seen:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"ipython ({mode}) ended before the next input:\n{seen}")
                seen += line
            took = time.perf_counter() - started
            rest = proc.stdout.read()
            proc.wait()
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if "RunInterrupted" not in seen + rest:
        raise RuntimeError(f"ipython ({mode}) was not interrupted cleanly:\n{seen + rest}")
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
    kernel: dict[str, list[float]] = {"sync": [], "await": []}
    repl: dict[str, list[float]] = {"sync": [], "await": []}
    for _ in range(args.repeat):
        with Simulator(ttft_ms=5, api_key=KEY) as sim:
            submits.append(submit_return(sim))
        with Simulator(ttft_ms=200, api_key=KEY) as sim:
            interrupts.append(interrupt(sim))
            for mode, times in repl.items():
                times.append(ipython_interrupt(sim, mode))
            for mode, seconds in kernel_interrupts(sim).items():
                kernel[mode].append(seconds)
        with Simulator(ttft_ms=150, api_key=KEY) as sim:
            wall, total = side_by_side(sim)
            walls.append(wall)
            sums.append(total)
    rows = [
        ["submit() of 200 rows returns", f"{statistics.median(submits) * 1000:.0f} ms",
         f"{max(submits) * 1000:.0f} ms"],
        ["SIGINT to the script's exit", f"{statistics.median(interrupts):.2f} s",
         f"{max(interrupts):.2f} s"],
        *([f"Ctrl+C in ipython to its next input ({mode})",
           f"{statistics.median(times):.2f} s", f"{max(times):.2f} s"]
          for mode, times in repl.items()),
        *([f"kernel interrupt to the cell's reply ({mode})",
           f"{statistics.median(times):.2f} s", f"{max(times):.2f} s"]
          for mode, times in kernel.items()),
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
