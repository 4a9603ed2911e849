"""Helpers shared by the benchmark scripts: tables, timing, memory, machine facts.

Nothing here imports llmbatch_pd, so a script can time that import itself.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO))

MODEL = "openai/gpt-4.1-mini"  # what df.llm.apply is told
WIRE_MODEL = "gpt-4.1-mini"  # what the other clients send
KEY = "sk-bench-0123456789"

_PAGE = os.sysconf("SC_PAGE_SIZE")


# -- machine -----------------------------------------------------------------------------


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_line() -> str:
    """One line to print first: the load average matters on a shared 2-core machine."""
    one, five, fifteen = os.getloadavg()
    return (
        f"machine: {os.cpu_count()} CPUs, load average {one:.2f} / {five:.2f} / {fifteen:.2f} "
        f"(1/5/15 min); Python {platform.python_version()}, pandas {version('pandas')}, "
        f"aiohttp {version('aiohttp')}"
    )


# -- tables ------------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[bool] | None = None
) -> str:
    """A markdown table; numbers are right-aligned unless ``right`` says otherwise."""
    rows = [[_cell(c) for c in row] for row in rows]
    if right is None:
        right = [all(_numeric(r[i]) for r in rows) and bool(rows) for i in range(len(headers))]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(out) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else ("-" * (w + 2))
            for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


def _numeric(text: str) -> bool:
    t = (
        text.replace(",", "")
        .replace("×", "")
        .replace("%", "")
        .replace("ms", "")
        .replace("s", "")
        .strip()
    )
    try:
        float(t)
    except ValueError:
        return t in ("–", "")
    return True


def yes_no(ok: bool) -> str:
    return "yes" if ok else "**NO**"


# -- time and CPU ------------------------------------------------------------------------


@dataclass
class Timing:
    wall: float  # seconds
    cpu: float  # seconds of this process (all threads), from time.process_time
    server_cpu: float | None = None  # seconds of the simulator subprocess, if found


class Meter:
    """Wall time, this process's CPU time, and the simulator subprocess's CPU time."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> Meter:
        self._s0 = _proc_cpu(self.server_pid)
        self._c0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._c0
        s1 = _proc_cpu(self.server_pid)
        server = s1 - self._s0 if s1 is not None and self._s0 is not None else None
        self.timing = Timing(wall, cpu, server)


def _proc_cpu(pid: int | None) -> float | None:
    """user+system CPU seconds of another process, read from /proc (Linux)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def simulator_pid(sim: object) -> int | None:
    """The simulator subprocess's pid (Simulator keeps its Popen private)."""
    proc = getattr(sim, "_proc", None)
    return getattr(proc, "pid", None)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- memory ------------------------------------------------------------------------------


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRSS:
    """Samples RSS on a thread every ``interval`` seconds; ``peak`` is the highest seen.

    Sleeping in C between samples, it costs the measured code next to nothing.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_bytes()
            self.samples += 1
            if rss > self.peak:
                self.peak = rss
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


MB = 1024 * 1024
