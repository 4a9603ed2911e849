"""Dask scale-out: how close does ``ddf.llm.apply`` run a cluster to a provider's limit, with how
many 429s, and what does the coordination cost?

The simulator (its own process) allows ``--rpm`` requests a minute (6,000 by default) and is NOT
told to the client: the run's coordinator on the scheduler learns it from any worker's headers
and 429s and paces every worker with one GCRA pacer. For 1, 2 and 4 worker processes (2 threads
each, Nanny workers, ``--rows`` rows in ``--partitions`` partitions, every prompt its own) it
prints, from the simulator's own log:

- rows/minute: answered requests (after a 16-row warm-up run on the fresh cluster) between the first request and the last answer, x 60;
- share of the limit used: that rate / the limit;
- 429 share: requests answered 429 / all requests;
- coordination: the coordinator's own count of worker round trips per request sent, and the
  seconds they took per request (summed over workers: time a worker's link spent waiting on the
  scheduler, off the engine's loop), and one round trip's latency measured from a task
  (``remote.rpc_cost``, 200 empty calls: median and 95th percentile).

``--baseline`` adds the obvious approach for comparison: ``ddf.map_partitions`` calling the
pandas ``df.llm.apply`` in each partition (each with its own limiter and budget).

    .venv/bin/python benchmarks/dask_scale.py
    .venv/bin/python benchmarks/dask_scale.py --workers 2 --rows 3000 --baseline
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from _common import KEY, MODEL, machine_line, table

TEMPLATE = "Classify the title: {title}"


def frame(rows: int, tag: str):
    import pandas as pd

    return pd.DataFrame({"title": [f"{tag} title {i}" for i in range(rows)]})


def figures(sim, rpm: float, rows: int, wall: float) -> dict:
    log = [e for e in sim.log if e["path"] == "/v1/chat/completions"]
    ok = [e for e in log if e["status"] == 200]
    limited = sum(e["status"] == 429 for e in log)
    window = (max(e["t"] for e in ok) - min(e["t"] for e in log)) if ok else float("nan")
    per_min = len(ok) / window * 60 if ok else 0.0
    return {"answered": len(ok), "lost": rows - len({e["prompt_sha"] for e in ok}),
            "rows_min": per_min, "share": per_min / rpm, "429": limited / len(log) if log else 0.0,
            "wall": wall}


def coordinated(client, sim, args, workers: int) -> dict:
    import dask.dataframe as dd

    import llmbatch_pd.dask  # noqa: F401
    from llmbatch_pd.dask.coordinator import coordination_cost
    from llmbatch_pd.dask.driver import driver

    ddf = dd.from_pandas(frame(args.rows, f"w{workers}"), npartitions=args.partitions)
    started = time.perf_counter()
    out = ddf.llm.apply(TEMPLATE, model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False,
                        cache=False)
    out.compute()
    out.llm.wait(600)
    row = figures(sim, args.rpm, args.rows, time.perf_counter() - started)
    cost = coordination_cost(driver(out.llm.run_id).final)
    row["calls_req"], row["coord_ms_req"] = cost["calls_per_request"], cost["ms_per_request"]
    row["rpc"] = rpc_latency(client)
    return row


def rpc_latency(client) -> str:
    from llmbatch_pd.dask.coordinator import RunLimits, close_run, open_run
    from llmbatch_pd.dask.remote import rpc_cost

    open_run(client, RunLimits(run_id="rpc-cost"))
    try:
        cost = client.submit(rpc_cost, "rpc-cost", pure=False).result()
    finally:
        close_run(client, "rpc-cost")
    return f"{cost['p50_ms']:.2f} / {cost['p95_ms']:.2f}"


def pandas_apply(pdf, base_url: str):
    """One partition through the pandas path, on its own (its own limiter, budget, breaker)."""
    import llmbatch_pd  # noqa: F401

    return pdf.llm.apply(TEMPLATE, model=MODEL, base_url=base_url, api_key=KEY, progress=False, cache=False)


def baseline(client, sim, args, workers: int) -> dict:
    import dask.dataframe as dd

    ddf = dd.from_pandas(frame(args.rows, f"b{workers}"), npartitions=args.partitions)
    meta = ddf._meta.assign(llm_output=ddf._meta["title"].astype("string"),
                            llm_output_error=ddf._meta["title"].astype("string"))
    started = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ddf.map_partitions(pandas_apply, sim.base_url, meta=meta).compute()
    row = figures(sim, args.rpm, args.rows, time.perf_counter() - started)
    row.update(calls_req=None, coord_ms_req=None, rpc="-")
    return row


def warm_up(sim) -> None:
    """A few rows first, so the figures leave out the workers' first imports (aiohttp, prices)."""
    import dask.dataframe as dd

    import llmbatch_pd.dask  # noqa: F401

    out = dd.from_pandas(frame(16, "warm"), npartitions=8).llm.apply(
        TEMPLATE, model=MODEL, base_url=sim.base_url, api_key=KEY, progress=False, cache=False)
    out.compute()
    out.llm.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rpm", type=int, default=6000)
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help="also map_partitions(df.llm.apply)")
    args = parser.parse_args()
    os.environ.setdefault("LLMBATCH_PD_CACHE", os.path.join(tempfile.mkdtemp(), "cache.sqlite"))

    import distributed

    from llmbatch_pd.sim import Simulator

    print(machine_line())
    print(f"{args.rows:,} rows in {args.partitions} partitions, simulator limit {args.rpm:,} requests/min "
          f"(not told), {args.threads} threads per worker process\n")
    rows = []
    with Simulator(ttft_ms=40, jitter_ms=20, api_key=KEY, process=True, rpm=args.rpm) as sim:
        for workers in args.workers:
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=args.threads, processes=True,
                                          dashboard_address=None) as cluster, distributed.Client(cluster) as client:
                warm_up(sim)
                ways = [("ddf.llm.apply", coordinated)]
                if args.baseline:
                    ways.append(("map_partitions(df.llm.apply)", baseline))
                for name, way in ways:
                    sim.reset()
                    sim.configure(rpm=args.rpm)  # fresh buckets
                    r = way(client, sim, args, workers)
                    rows.append([workers, name, f"{r['rows_min']:,.0f}", f"{r['share']:.0%}", f"{r['429']:.1%}",
                                 r["lost"], f"{r['wall']:.1f}",
                                 "-" if r["calls_req"] is None else f"{r['calls_req']:.2f}",
                                 "-" if r["coord_ms_req"] is None else f"{r['coord_ms_req']:.2f}", r["rpc"]])
                    print(f"  {workers} worker(s), {name}: done in {r['wall']:.1f} s", flush=True)
    print()
    print(table(["workers", "way", "rows/min", "of limit", "429 share", "rows lost", "wall s",
                 "round trips / request", "coordination ms / request", "round trip ms p50 / p95"], rows))


if __name__ == "__main__":
    main()
