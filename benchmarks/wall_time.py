"""Wall-time estimate against the real wall time, for a new template and after one run.

For each latency model of the simulator (the notebooks' and the demo's settings, and one
shaped like a small hosted model: about 0.5 s to the first token, 80 tokens a second), a
frame of ``--rows`` rows with a template the cache file has never seen is estimated
(``df.llm.estimate``: no history, the defaults), then run (``df.llm.apply``, timed), then a
second frame with the same template is estimated again (now the template's history) and run,
then a third with another template (no history of its own: the endpoint's measured latency).
The table shows each estimate next to the wall time it was meant to predict, and the mean
latency a request had (from the engine's own sum of waits).

    .venv/bin/python benchmarks/wall_time.py
    .venv/bin/python benchmarks/wall_time.py --rows 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from _common import KEY, MODEL, machine_line, table

LATENCY_MODELS = {
    # name: simulator settings
    "notebooks (ttft 150 ms, 400 tok/s, jitter 100 ms)": {"ttft_ms": 150, "tokens_per_s": 400, "jitter_ms": 100},
    "small hosted model (ttft 500 ms, 80 tok/s, jitter 300 ms)": {"ttft_ms": 500, "tokens_per_s": 80,
                                                                  "jitter_ms": 300},
    "slow answers (ttft 800 ms, 50 tok/s, 150-token answers)": {"ttft_ms": 800, "tokens_per_s": 50,
                                                                "answer_tokens": 150},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    import pandas as pd

    import llmbatch_pd  # noqa: F401
    from llmbatch_pd.sim import Simulator

    print(machine_line())
    rows = []
    for name, settings in LATENCY_MODELS.items():
        with tempfile.TemporaryDirectory() as tmp, Simulator(**settings) as sim:
            kw = {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False,
                  "cache": os.path.join(tmp, "cache.db"), "concurrency": args.concurrency}
            runs = (("new template, new endpoint", "Classify the sentiment of this review: {text}"),
                    ("same template, after one run", "Classify the sentiment of this review: {text}"),
                    ("new template, known endpoint", "Summarise this review in one word: {text}"))
            for run, template in runs:
                df = pd.DataFrame({"text": [f"{run} review number {i}" for i in range(args.rows)]})
                estimated = float(df.llm.estimate(template, **kw)["wall_time_s"].iloc[0])
                start = time.perf_counter()
                out = df.llm.apply(template, **kw)
                real = time.perf_counter() - start
                s = out.attrs["llm_report"].stats
                latency = s.latency_total / s.done if s.done else float("nan")
                rows.append([name, run, f"{estimated:.1f}", f"{real:.1f}", f"{estimated / real:.1f}x",
                             f"{latency:.2f}", f"{s.output_tokens / max(s.done, 1):.0f}"])
    print(f"\n{args.rows} rows, concurrency {args.concurrency}, model {MODEL} on the simulator\n")
    print(table(["latency model", "estimate made", "estimate s", "real s", "estimate / real",
                 "mean latency s", "output tokens / answer"], rows))


if __name__ == "__main__":
    main()
