"""``make demo`` (``python -m llmbatch_pd``): classify the bundled reviews on the built-in simulator.

Nothing leaves this machine: the simulator answers on loopback with deterministic,
realistically-sized answers, rate-limit headers and a few injected faults.
"""

from __future__ import annotations

import os

import pandas as pd

from llmbatch_pd import load_reviews  # importing the package registers df.llm
from llmbatch_pd.sim import Simulator

TEMPLATE = (
    "Classify the sentiment of this customer review as positive, negative or neutral.\n"
    "Shop: {shop}\nProduct: {product}\nReview: {text}"
)


DEMO_PORT = int(os.environ.get("LLMBATCH_PD_DEMO_PORT", "8599"))
"""The simulator's port in the demo: fixed, because the endpoint (with its port) is part of
every answer's cache key, and a second ``make demo`` should find the first one's answers."""

SIMULATOR_NOTE = (
    "Answers come from llmbatch_pd.sim, a loopback simulator of the providers' APIs: it does not\n"
    "read the reviews, it answers with placeholder words of realistic length, with latency, rate\n"
    "limits and injected faults, so a one-star review may well come back 'neutral'. Point model=\n"
    "and api_key= at a real provider for real labels."
)


def _simulator() -> Simulator:
    """The demo's simulator, on DEMO_PORT when it is free (else any port: no cache reuse)."""
    options = {"ttft_ms": 150, "tokens_per_s": 400, "jitter_ms": 100, "rpm": 6000,
               "fault_429": 0.03, "fault_5xx": 0.02, "seed": 7}
    try:
        return Simulator(port=DEMO_PORT, **options).start()
    except OSError:
        print(f"(port {DEMO_PORT} is taken: the simulator runs on another, and this run cannot "
              "reuse an earlier demo's cached answers)")
        return Simulator(**options).start()


def main() -> None:
    reviews = load_reviews()
    print(f"{len(reviews)} reviews ({reviews.language.value_counts().to_dict()}) -> simulator\n")
    print(SIMULATOR_NOTE + "\n")
    sim = _simulator()
    try:
        options = {"model": "openai/gpt-4.1-mini", "max_tokens": 5, "base_url": sim.base_url,
                   "api_key": "sk-demo-simulator", "concurrency": 32}
        out = reviews.llm.apply(TEMPLATE, output="sentiment", **options)
        first = out.llm.report
        seen = sim.stats().get("total", 0)
        again = reviews.llm.apply(TEMPLATE, output="sentiment", progress=False, **options).llm.report
        asked_again = sim.stats().get("total", 0) - seen
    finally:
        sim.stop()
    pd.set_option("display.width", 140, "display.max_colwidth", 60)
    print(out[["shop", "rating", "text", "sentiment", "sentiment_error"]].head(12).to_string())
    print("\nsentiment counts (placeholder answers):", out["sentiment"].value_counts(dropna=False).to_dict())
    print("\n" + first.summary())
    print(f"simulator saw {seen} requests")
    if first.cached:
        print(f"{first.cached} of {len(reviews)} answers came from the cache file: an earlier demo "
              "paid for them")
    print(f"\nThe same call again: {again.cached} answers from the cache, {asked_again} requests "
          f"sent, ${again.cost:.4f} spent.")


if __name__ == "__main__":
    main()
