"""Memory and import time.

1. Peak memory of ``df.llm.apply`` above its input and output frames, for several sizes.
   Each size runs in a fresh subprocess so the sizes do not share an allocator's history:

   - build the input frame, do a 200-row warm-up apply (imports, the loop thread, the HTTP
     stack: fixed costs that do not belong to any size), ``gc.collect()``, read RSS: baseline;
   - run the apply while a thread samples RSS every 5 ms: peak;
   - working memory = peak - baseline - what the output frame adds. The output is a copy of
     the input plus two string columns; without pyarrow, pandas' strings are Python objects
     that the copy shares with the input, so "what it adds" is the new columns (deep) plus
     the copied columns' arrays (shallow). Also shown: RSS still held after the call,
     above baseline and the output frame.

   The simulator runs in its own process with ``log=False``, answering in 1 ms.
   ``--modes realtime,batch`` measures both: in batch mode the same rows go through the
   simulator's OpenAI Batch API (``mode="batch"``, jobs of up to 50,000 requests, polled every
   0.05 s); the requests stream through a temporary file, so the working memory per row should
   match real time's. (``--skip-imports`` leaves out part 2.)

2. ``import llmbatch_pd`` time beyond pandas: fresh interpreters time ``import pandas`` and
   then ``import llmbatch_pd`` (median of ``--import-runs``), and ``python -X importtime`` is
   read to name what llmbatch_pd's own modules import (median cumulative time).

    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --sizes 10000,30000 --import-runs 3
    .venv/bin/python benchmarks/memory.py --sizes 10000,100000,1000000 --modes realtime,batch \
        --skip-imports
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from _common import KEY, MB, MODEL, PeakRSS, machine_line, rss_bytes, table

HERE = Path(__file__).resolve().parent


# -- child: one size ---------------------------------------------------------------------


def _frame(n: int, tag: str):
    import pandas as pd

    return pd.DataFrame(
        {
            "id": range(n),
            "text": [
                f"Review {i} ({tag}): the blender is loud but crushes ice in seconds; would buy again."
                for i in range(n)
            ],
        }
    )


def child(n: int, concurrency: int, latency_ms: float, cache: bool, mode: str = "realtime") -> dict:
    import tempfile

    import llmbatch_pd  # noqa: F401
    from llmbatch_pd.sim import Simulator

    with (
        Simulator(ttft_ms=latency_ms, process=True, log=False, api_key=KEY,
                  batch_seconds=0.5) as sim,
        tempfile.TemporaryDirectory() as tmp,
    ):

        def apply(df, name):
            return df.llm.apply(
                "{text}",
                model=MODEL,
                base_url=sim.base_url,
                api_key=KEY,
                concurrency=concurrency,
                progress=False,
                mode=mode,
                poll_interval=0.05,
                cache=str(Path(tmp) / f"{name}.sqlite") if cache else False,
            )

        apply(_frame(200, "warm-up"), "warm")
        df = _frame(n, "run")
        gc.collect()
        baseline = rss_bytes()
        t0 = time.perf_counter()
        with PeakRSS() as peak:
            out = apply(df, "run")
        wall = time.perf_counter() - t0
        gc.collect()
        after = rss_bytes()
        new_cols = [c for c in out.columns if c not in df.columns]
        adds = int(
            out[new_cols].memory_usage(deep=True, index=False).sum()
            + out[list(df.columns)].memory_usage(deep=False).sum()
        )
        return {
            "mode": mode,
            "rows": n,
            "wall": wall,
            "answered": int(out["llm_output"].notna().sum()),
            "input": int(df.memory_usage(deep=True).sum()),
            "output_deep": int(out.memory_usage(deep=True).sum()),
            "output_adds": adds,
            "baseline": baseline,
            "peak": peak.peak,
            "samples": peak.samples,
            "after": after,
        }


# -- import time -------------------------------------------------------------------------

_TIME_IMPORTS = (
    "import time; t0 = time.perf_counter(); import pandas; t1 = time.perf_counter(); "
    "import llmbatch_pd; t2 = time.perf_counter(); print(t1 - t0, t2 - t1)"
)


def import_times(runs: int) -> tuple[list[float], list[float]]:
    pandas, ours = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _TIME_IMPORTS],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE.parent,
        )
        a, b = map(float, out.stdout.split())
        pandas.append(a)
        ours.append(b)
    return pandas, ours


def _tree(stderr: str) -> list[dict]:
    """-X importtime's post-order lines -> a forest of {name, self, cum, children}."""
    pending: list[tuple[int, dict]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cum_us, raw = line.split(":", 1)[1].split("|")
        name = raw[1:].rstrip()  # one space after the bar, then two per level of nesting
        depth = (len(name) - len(name.lstrip())) // 2
        node = {"name": name.strip(), "self": int(self_us), "cum": int(cum_us), "children": []}
        while pending and pending[-1][0] > depth:
            node["children"].insert(0, pending.pop()[1])
        pending.append((depth, node))
    return [n for _, n in pending]


def _heaviest(node: dict) -> dict:
    """The module with the most self time in a subtree."""
    best = node
    for c in node["children"]:
        h = _heaviest(c)
        if h["self"] > best["self"]:
            best = h
    return best


def import_offenders(runs: int):
    """(imported module, importing llmbatch_pd module) -> cumulative µs per run, and the
    heaviest module inside it (name -> self µs per run); llmbatch_pd's own self µs; total."""
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    inside: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    own_self, total = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import pandas; import llmbatch_pd"],
            capture_output=True,
            text=True,
            check=True,
            cwd=HERE.parent,
        )
        roots = [r for r in _tree(out.stderr) if r["name"] == "llmbatch_pd"]
        if not roots:
            continue
        own = 0

        def walk(node: dict) -> None:
            nonlocal own
            own += node["self"]
            for c in node["children"]:
                if c["name"].split(".")[0] == "llmbatch_pd":
                    walk(c)
                else:
                    found[(c["name"], node["name"])].append(c["cum"])
                    h = _heaviest(c)
                    inside[(c["name"], node["name"])][h["name"]].append(h["self"])

        walk(roots[0])
        own_self.append(own)
        total.append(roots[0]["cum"])
    return found, inside, own_self, total


# -- parent ------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated row counts")
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--latency-ms", type=float, default=1.0, help="simulator ttft_ms")
    ap.add_argument(
        "--cache", action="store_true", help="cache on (a cold file) instead of cache=False"
    )
    ap.add_argument(
        "--import-runs", type=int, default=7, help="fresh interpreters for the import timing"
    )
    ap.add_argument("--top", type=int, default=10, help="import offenders to list")
    ap.add_argument("--modes", default="realtime", help="realtime and/or batch, comma-separated")
    ap.add_argument("--skip-imports", action="store_true", help="memory only, no import timing")
    ap.add_argument("--mode", default="realtime", help=argparse.SUPPRESS)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.concurrency, args.latency_ms, args.cache, args.mode)))
        return

    print(machine_line())
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(
        f"memory: sizes {', '.join(f'{s:,}' for s in sizes)}, each in a fresh subprocess; "
        f"{args.concurrency} in flight, simulator (own process, log=False) answering in "
        f"{args.latency_ms:g} ms; {'cache on (cold file)' if args.cache else 'cache=False'}\n"
    )
    results = []
    for mode, n in ((m, n) for m in modes for n in sizes):
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(n),
            "--concurrency",
            str(args.concurrency),
            "--latency-ms",
            str(args.latency_ms),
            "--mode",
            mode,
        ]
        if args.cache:
            cmd.append("--cache")
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"{mode} size {n} failed:\n{out.stderr[-2000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {mode} {n:,} rows: {results[-1]['wall']:.1f} s", file=sys.stderr, flush=True)

    rows = []
    first: dict[str, float] = {}
    for r in results:
        peak_above = r["peak"] - r["baseline"]
        working = peak_above - r["output_adds"]
        held = r["after"] - r["baseline"] - r["output_adds"]
        first.setdefault(r["mode"], working)
        rows.append(
            [
                r["mode"],
                f"{r['rows']:,}",
                f"{r['wall']:.1f} s",
                f"{r['answered']:,}",
                f"{r['input'] / MB:.1f}",
                f"{r['output_deep'] / MB:.1f}",
                f"{r['output_adds'] / MB:.1f}",
                f"{r['baseline'] / MB:.0f}",
                f"{peak_above / MB:.1f}",
                f"{working / MB:.1f}",
                f"{working / r['rows']:.0f} B",
                f"{working / first[r['mode']]:.2f}×",
                f"{held / MB:.1f}",
            ]
        )
    print(
        table(
            [
                "mode",
                "rows",
                "wall",
                "answered",
                "input MB (deep)",
                "output MB (deep)",
                "output adds MB",
                "RSS baseline MB",
                "peak above baseline MB",
                "working MB (peak − baseline − output adds)",
                "working / row",
                f"working vs {sizes[0]:,}",
                "RSS kept after the call MB",
            ],
            rows,
        )
    )

    if args.skip_imports:
        print(f"\nload average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return
    pandas_t, ours_t = import_times(args.import_runs)
    found, inside, own_self, total = import_offenders(max(3, args.import_runs // 2))
    print(
        f"\nimport time in fresh interpreters, median of {args.import_runs}: "
        f"`import pandas` {statistics.median(pandas_t) * 1000:.0f} ms, then `import llmbatch_pd` "
        f"{statistics.median(ours_t) * 1000:.0f} ms more (min {min(ours_t) * 1000:.0f}, max {max(ours_t) * 1000:.0f}); "
        f"-X importtime: llmbatch_pd cumulative {statistics.median(total) / 1000:.0f} ms, "
        f"its own modules' code {statistics.median(own_self) / 1000:.0f} ms\n"
    )
    med = sorted(
        ((statistics.median(v), name, by) for (name, by), v in found.items()), reverse=True
    )
    top = []
    for us, name, by in med[: args.top]:
        heavy_name, heavy = max(inside[(name, by)].items(), key=lambda kv: len(kv[1]))
        top.append(
            [
                name,
                by,
                f"{us / 1000:.1f} ms",
                f"{us / statistics.median(total):.0%}",
                f"{heavy_name} ({statistics.median(heavy) / 1000:.1f} ms self)",
            ]
        )
    print(
        table(
            [
                "imported module (beyond pandas)",
                "imported by",
                "cumulative (median)",
                "share of llmbatch_pd import",
                "heaviest module inside",
            ],
            top,
        )
    )
    print(f"\nload average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    if "--child" not in sys.argv:
        print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
