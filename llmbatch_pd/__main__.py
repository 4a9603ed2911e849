"""``make demo`` (``python -m llmbatch_pd``): classify the bundled reviews on the built-in simulator.

Nothing leaves this machine: the simulator answers on loopback with deterministic,
realistically-sized answers, rate-limit headers and a few injected faults.
"""

from __future__ import annotations

import pandas as pd

from llmbatch_pd import load_reviews  # importing the package registers df.llm
from llmbatch_pd.sim import Simulator

TEMPLATE = (
    "Classify the sentiment of this customer review as positive, negative or neutral.\n"
    "Shop: {shop}\nProduct: {product}\nReview: {text}"
)


def main() -> None:
    reviews = load_reviews()
    print(f"{len(reviews)} reviews ({reviews.language.value_counts().to_dict()}) -> simulator\n")
    with Simulator(ttft_ms=150, tokens_per_s=400, jitter_ms=100, rpm=6000, fault_429=0.03,
                   fault_5xx=0.02, seed=7) as sim:
        out = reviews.llm.apply(
            TEMPLATE,
            model="openai/gpt-4.1-mini",
            output="sentiment",
            max_tokens=5,
            base_url=sim.base_url,
            api_key="sk-demo-simulator",
            concurrency=32,
        )
        stats = sim.stats()
    pd.set_option("display.width", 140, "display.max_colwidth", 60)
    print(out[["shop", "rating", "text", "sentiment", "sentiment_error"]].head(12).to_string())
    print("\nsentiment counts:", out["sentiment"].value_counts(dropna=False).to_dict())
    print("\n" + out.llm.report.summary())
    print(f"simulator saw {stats.get('total', '?')} requests")


if __name__ == "__main__":
    main()
