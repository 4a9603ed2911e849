"""Embeddings: requests, wall time and CPU for many short texts, against the ways users do it.

The simulator runs in its own process answering in ``--latency-ms``; every client embeds the
same ``--rows`` short texts (unique per run) with ``openai/text-embedding-3-small`` (1536
dimensions, base64 on the wire, as the openai SDK sends) and ends with one float32 vector per
text. Clients:

- ``s.llm.embed`` cold (a fresh cache file), then the same call again (every vector cached);
- the openai SDK, the careful way: 2,048 texts per request, ``--concurrency`` requests at once;
- the openai SDK, the common way: one text per request, 64 in flight behind a semaphore (on
  ``--naive-rows`` texts; its rows/s is what it would keep up over all of them).

    .venv/bin/python benchmarks/embeddings.py
    .venv/bin/python benchmarks/embeddings.py --rows 2000 --naive-rows 500
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import KEY, Meter, machine_line, simulator_pid, table

MODEL = "openai/text-embedding-3-small"
WIRE_MODEL = "text-embedding-3-small"
_run_ids = itertools.count()


def _texts(n: int) -> list[str]:
    run = next(_run_ids)
    return [f"Review {i} (run {run}): the kettle boils fast, the lid feels cheap." for i in range(n)]


def _ours(cache_path: Path) -> Callable:
    def run(base_url: str, texts: list[str], concurrency: int) -> list:
        import pandas as pd

        import llmbatch_pd  # noqa: F401

        out = pd.Series(texts).llm.embed(model=MODEL, base_url=base_url, api_key=KEY, progress=False,
                                         cache=str(cache_path), concurrency=concurrency)
        return list(out)

    return run


def _sdk_packed(base_url: str, texts: list[str], concurrency: int) -> list:
    from openai import AsyncOpenAI

    async def main() -> list:
        client = AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=2)
        sem = asyncio.Semaphore(concurrency)

        async def one(chunk: list[str]) -> list:
            async with sem:
                reply = await client.embeddings.create(model=WIRE_MODEL, input=chunk)
            return [np.asarray(d.embedding, dtype=np.float32) for d in reply.data]

        chunks = [texts[i:i + 2048] for i in range(0, len(texts), 2048)]
        try:
            return [v for part in await asyncio.gather(*(one(c) for c in chunks)) for v in part]
        finally:
            await client.close()

    return asyncio.run(main())


def _sdk_per_row(base_url: str, texts: list[str], concurrency: int) -> list:
    from openai import AsyncOpenAI

    async def main() -> list:
        client = AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=2)
        sem = asyncio.Semaphore(64)

        async def one(text: str) -> np.ndarray:
            async with sem:
                reply = await client.embeddings.create(model=WIRE_MODEL, input=text)
            return np.asarray(reply.data[0].embedding, dtype=np.float32)

        try:
            return await asyncio.gather(*(one(t) for t in texts))
        finally:
            await client.close()

    return asyncio.run(main())


def measure(sim, label: str, runner: Callable, texts: list[str], concurrency: int) -> list:
    sim.reset()
    with Meter(simulator_pid(sim)) as m, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vectors = runner(sim.base_url, texts, concurrency)
    ok = sum(v is not None and getattr(v, "shape", (0,))[0] == 1536 for v in vectors)
    requests = sim.stats()["total"]
    t = m.timing
    return [label, len(texts), requests, f"{len(texts) / max(requests, 1):,.0f}", f"{t.wall:.2f} s",
            f"{len(texts) / t.wall:,.0f}", f"{t.cpu / len(texts) * 1e6:.0f} µs", f"{ok}/{len(texts)}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--naive-rows", type=int, default=2_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--latency-ms", type=float, default=100.0)
    args = ap.parse_args()

    from llmbatch_pd.sim import Simulator

    print(machine_line())
    print(f"embeddings: {args.rows:,} short texts, {MODEL} (1536 dims), simulator in its own process "
          f"answering in {args.latency_ms:g} ms\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, \
            Simulator(ttft_ms=args.latency_ms, process=True, log=False, api_key=KEY) as sim:
        cache = Path(tmp) / "cache.sqlite"
        measure(sim, "warm-up", _ours(cache), _texts(200), args.concurrency)
        measure(sim, "warm-up", _sdk_packed, _texts(200), args.concurrency)
        texts = _texts(args.rows)
        rows.append(measure(sim, "llmbatch_pd s.llm.embed (cold)", _ours(cache), texts, args.concurrency))
        rows.append(measure(sim, "llmbatch_pd, same call again (cached)", _ours(cache), texts,
                            args.concurrency))
        rows.append(measure(sim, "openai SDK, 2,048 per request", _sdk_packed, _texts(args.rows),
                            args.concurrency))
        rows.append(measure(sim, "openai SDK, 1 per request, 64 in flight", _sdk_per_row,
                            _texts(args.naive_rows), args.concurrency))
    print(table(["client", "rows", "requests", "rows/request", "wall", "rows/s", "client CPU/row", "vectors"],
                rows, right=[False, True, True, True, True, True, True, True]))


if __name__ == "__main__":
    main()
