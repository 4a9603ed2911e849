"""The terminal display as a user sees it: a real run (``progress="tqdm"``) in a child process
against the loopback simulator, its stderr a pseudo-terminal of a given width or a pipe, and the
assertions on the text it wrote. Dollars are checked against a bill computed by hand from the
simulator's request log (``conftest.bill``), rates against what the simulator can answer."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pandas as pd
import pytest

from llmbatch_pd.ui.console import LOG_INTERVAL, MIN_BAR, RATE_AFTER, SEP, ConsoleProgress

from ..conftest import bill, paused, wait_until

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys
import pandas as pd
import llmbatch_pd
from llmbatch_pd.sim import Simulator

args = json.loads(sys.argv[1])
with Simulator(ttft_ms=args["ttft_ms"], api_key="sk-child-key") as sim:
    df = pd.DataFrame({"t": [f"row {i}" for i in range(args["rows"])]})
    options = dict(base_url=sim.base_url, api_key="sk-child-key", progress="tqdm",
                   concurrency=args["concurrency"], budget=0.5)
    models = args["models"]
    model = models if len(models) > 1 else models[0]
    if args.get("warm"):  # answered once: in the cache for the run shown
        df.head(args["warm"]).llm.apply("Say {t}", model=model, **{**options, "progress": False, "concurrency": 32})
    sys.stderr.write("RUN STARTS\\n")
    sys.stderr.flush()
    df.llm.apply("Say {t}", model=model, **options)
    with open(args["report"], "w") as f:  # not stdout: a pipe nobody reads yet would fill up
        json.dump({"log": sim.log}, f)
"""

BAR = re.compile(r"^(?P<desc>.+?): +(?P<pct>\d+)%\|(?P<bar>[^|]*)\| (?P<n>[\d,]+)/(?P<total>[\d,]+) (?P<figures>.*)$")


def child(tmp_path, **args):
    args["report"] = str(tmp_path / "report.json")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("COLUMNS", None)
    return [sys.executable, str(script), json.dumps(args)], env


def run_in_pty(tmp_path, columns: int, **args) -> tuple[str, dict]:
    """The child with a pseudo-terminal of ``columns`` as its stderr: (what the terminal got,
    the child's report on stdout)."""
    cmd, env = child(tmp_path, **args)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(cmd, stderr=slave, stdout=subprocess.DEVNULL, env=env)
    os.close(slave)
    got = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, got.decode(errors="replace")
    return got.decode(), json.loads((tmp_path / "report.json").read_text())


def screens(text: str) -> list[str]:
    """Every state of the bar line the terminal showed (each ``\\r`` redraw), after the run starts."""
    text = text.split("RUN STARTS", 1)[1]
    return [seg.rstrip() for line in text.replace("\r\n", "\n").split("\n") for seg in line.split("\r")
            if BAR.match(seg.rstrip())]


def dollars(figures: str) -> float:
    return float(figures.split("/", 1)[0].lstrip("$").replace(",", ""))


@pytest.mark.slow  # a child process and 200 simulated requests: ~4 s
def test_at_80_columns_the_dollars_stay_and_the_bar_keeps_its_width(tmp_path):
    text, report = run_in_pty(tmp_path, 80, rows=200, ttft_ms=40, concurrency=8,
                              models=["openai/gpt-4.1-mini"])
    shown = screens(text)
    assert len(shown) >= 2, text
    for screen in shown:
        assert len(screen) <= 80, screen
        m = BAR.match(screen)
        assert len(m["bar"]) >= MIN_BAR, screen
        assert m["figures"].startswith("$") and "/$0.50" in m["figures"], screen
    last = BAR.match(shown[-1])
    assert (last["n"], last["total"]) == ("200", "200")
    assert dollars(last["figures"]) == pytest.approx(bill(report["log"]), rel=5e-3)
    assert "ok 200" in last["figures"]


class Clock:
    """The display's clock, moved by the test: what it shows cannot depend on the machine's speed."""

    start = 1000.0  # any origin: the display only takes differences

    def __init__(self) -> None:
        self.now = self.start

    def __call__(self) -> float:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = self.start + seconds


def figures(shown: ConsoleProgress) -> str:
    return SEP.join(p for p in shown.pieces() if p)


def test_no_rate_before_two_seconds_and_cached_rows_do_not_make_one(llm, sim):
    """A real run against the simulator, 300 of its 360 rows already in the cache; the display's
    clock moved by hand. The first sample comes before the run starts (``confirm=True``); the
    simulator is held still while the cache answers its 300 rows at once: no rate is shown
    before the display has ``RATE_AFTER`` seconds of samples by its own clock, and then the rate
    counts no cached row (0 answered by the provider in 2 s, not 150 rows/s). Once the run is
    over, the rate is the simulator's answers over the display's clock."""
    df = pd.DataFrame({"t": [f"row {i}" for i in range(360)]})
    df.head(300).llm.apply("Say {t}", concurrency=32, **llm)  # answered once: in the cache
    assert sum(e["status"] == 200 for e in sim.log) == 300
    clock = Clock()
    job = df.llm.submit("Say {t}", concurrency=2, confirm=True, **llm)
    report = job.report
    shown = ConsoleProgress(report, file=io.StringIO(), clock=clock)
    shown.update()  # the first sample: nothing answered yet
    assert report.answered_rows == 0 and "rows/s" not in figures(shown)
    with paused(sim):
        job.start()
        wait_until(lambda: report.cached == 300 == report.answered_rows and report.stats.in_flight >= 1, 30,
                   "the cache to answer its 300 rows with a request waiting at the simulator")
        for step in range(1, 4):  # 0.5 s, 1 s, 1.5 s of samples: too few for a rate
            clock.at(step * RATE_AFTER / 4)
            shown.update()
            assert shown.rate() is None and "rows/s" not in figures(shown), figures(shown)
        clock.at(RATE_AFTER)
        shown.update()
        assert shown.rate() == 0.0 and "· 0 rows/s" in figures(shown), figures(shown)
    job.result(timeout=60)
    fresh = [e for e in sim.log[300:] if e["status"] == 200]
    assert len(fresh) == 60  # the run sent only the rows the cache did not have
    clock.at(2 * RATE_AFTER)
    shown.update()
    assert shown.rate() == pytest.approx(len(fresh) / (2 * RATE_AFTER))
    assert f"· {len(fresh) / (2 * RATE_AFTER):g} rows/s" in figures(shown), figures(shown)


def test_a_pipe_gets_a_line_every_log_interval_of_the_displays_clock(llm, sim):
    """Not a terminal: the first line once the run has started, then one each ``LOG_INTERVAL``
    seconds of the display's clock (however often it is updated), one at the end; no redraw."""
    out = pd.DataFrame({"t": [f"row {i}" for i in range(20)]}).llm.apply("Say {t}", **llm)
    stream, clock = io.StringIO(), Clock()
    shown = ConsoleProgress(out.llm.report, file=stream, clock=clock)
    for tick in range(121):  # ten updates a second for 12 s (throttled to four: min_interval)
        clock.at(tick / 10)
        shown.update()
    shown.finish()
    lines = stream.getvalue().splitlines()
    assert LOG_INTERVAL == 5.0 and len(lines) == 4, lines  # at 0 s, 5 s, 10 s and the end
    assert all(ln.startswith("openai/gpt-4.1-mini: 20/20 rows (100%) · $") for ln in lines), lines
    assert "\r" not in stream.getvalue()


@pytest.mark.slow  # ~4 s
def test_a_pipe_gets_plain_lines_every_few_seconds(tmp_path):
    cmd, env = child(tmp_path, rows=200, ttft_ms=40, concurrency=8, models=["openai/gpt-4.1-mini"])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    err = done.stderr.split("RUN STARTS\n", 1)[1]
    assert "\r" not in err and "\x1b" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("openai/gpt-4.1-mini: ")]
    # one when the run starts and one at the end (the cadence in between, by the display's own
    # clock: test_a_pipe_gets_a_line_every_log_interval_of_the_displays_clock)
    assert len(lines) >= 2, err
    assert lines[-1].startswith("openai/gpt-4.1-mini: 200/200 rows (100%) · $"), lines[-1]
    assert dollars(lines[-1].split(" · ")[1]) == pytest.approx(bill(report["log"]), rel=5e-3)


@pytest.mark.slow  # ~4 s
def test_three_models_read_as_words(tmp_path):
    models = ["openai/gpt-4.1-mini", "openai/gpt-4.1-nano", "openai/gpt-4o-mini"]
    cmd, env = child(tmp_path, rows=40, ttft_ms=20, concurrency=8, models=models)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    last = [ln for ln in done.stderr.splitlines() if ln.startswith("3 models: ")][-1]
    for model in models:
        assert f"{model.split('/')[1]} 40/40" in last, last
    assert "=" not in last
    assert dollars(last.split(" · ")[1]) == pytest.approx(bill(report["log"]), rel=5e-3)
    text, _ = run_in_pty(tmp_path, 80, rows=40, ttft_ms=20, concurrency=8, models=models)
    for screen in screens(text):
        assert len(screen) <= 80 and BAR.match(screen)["figures"].startswith("$"), screen
