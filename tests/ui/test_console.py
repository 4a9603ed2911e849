"""The terminal display as a user sees it: a real run (``progress="tqdm"``) in a child process
against the loopback simulator, its stderr a pseudo-terminal of a given width or a pipe, and the
assertions on the text it wrote. Dollars are checked against a bill computed by hand from the
simulator's request log (``conftest.bill``), rates against what the simulator can answer."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from llmbatch_pd.ui.console import LOG_INTERVAL, MIN_BAR, RATE_AFTER

from ..conftest import bill

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys, time
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
    t = time.monotonic()
    df.llm.apply("Say {t}", model=model, **options)
    with open(args["report"], "w") as f:  # not stdout: a pipe nobody reads yet would fill up
        json.dump({"elapsed": time.monotonic() - t, "log": sim.log}, f)
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


@pytest.mark.slow  # ~6 s: 300 rows answered from the cache at once, then 60 at the simulator's pace
def test_no_rate_before_two_seconds_and_cached_rows_do_not_make_one(tmp_path):
    ttft_ms, concurrency = 150, 2
    text, report = run_in_pty(tmp_path, 120, rows=360, warm=300, ttft_ms=ttft_ms, concurrency=concurrency,
                              models=["openai/gpt-4.1-mini"])
    fresh = [e for e in report["log"][300:] if e["status"] == 200]
    assert len(fresh) == 60  # the run sent only the rows the cache did not have
    ceiling = concurrency / (ttft_ms / 1000)  # what the simulator can answer at most, rows/s
    rates = []
    for screen in screens(text):
        m = re.search(r"· ([\d.,]+) rows/s", screen)
        if m is None:
            continue
        rate = float(m.group(1).replace(",", ""))
        rates.append(rate)
        assert rate <= ceiling * 1.2, screen  # 300 cached rows at once would read as hundreds
        elapsed = re.search(r"· (\d+(?:\.\d+)?)(ms|s)\b", screen)
        assert elapsed and elapsed.group(2) == "s" and float(elapsed.group(1)) >= RATE_AFTER * 0.9, screen
    assert rates, text  # the run lasted long enough to show one


@pytest.mark.slow  # ~4 s
def test_a_pipe_gets_plain_lines_every_few_seconds(tmp_path):
    cmd, env = child(tmp_path, rows=200, ttft_ms=40, concurrency=8, models=["openai/gpt-4.1-mini"])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    err = done.stderr.split("RUN STARTS\n", 1)[1]
    assert "\r" not in err and "\x1b" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("openai/gpt-4.1-mini: ")]
    # one when the run starts, one every LOG_INTERVAL seconds, one at the end
    assert 2 <= len(lines) <= 2 + report["elapsed"] / LOG_INTERVAL + 1, err
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
