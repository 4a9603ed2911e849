"""Dollars per 1,000 rows and wall time of the demo task on the simulator, one way at a time:
per row, prompt cached, packed (pack=5, 10, 20), flex and batch; with requests per row, and the
estimate's figure for the same way next to the measured one.

Two tasks: the demo's (``python -m llmbatch_pd``: a short instruction, below every provider's
prompt-caching minimum, so caching saves nothing there) and the same with a 2,500-token
instruction in front (the issue's caching check), where the static prefix is cached.

The simulator answers with the latency of a small hosted model (150 ms to the first token, 400
tokens/s; flex three times slower); batch jobs complete after ``batch_seconds`` (1 s here, up to
24 h at the providers). Dollars are what the run's report says it paid, at gpt-4.1-mini's list
price (cached input at its cached price; flex and batch at half). Packed rows are measured when
the library takes ``pack=`` (issue 14's row packing); otherwise their rows say "not available".

    python benchmarks/money.py [--rows 1000] [--models openai/gpt-4.1-mini]
"""

from __future__ import annotations

import argparse
import inspect
import time
import warnings
from typing import Any

from _common import KEY, machine_line, table

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd import load_reviews
from llmbatch_pd.__main__ import TEMPLATE
from llmbatch_pd.runs.chat_spec import chat_spec
from llmbatch_pd.sim import Simulator
from llmbatch_pd.sim.tokens import count_tokens


def rules(tokens: int) -> str:
    """An instruction of about ``tokens`` tokens by the simulator's own count."""
    aspects = ["delivery", "price", "quality", "packaging", "support", "taste"]
    out: list[str] = []
    while count_tokens(" ".join(out)) < tokens:
        w = aspects[len(out) % len(aspects)]
        out.append(f"Rule {len(out)}: a review that mentions {w} counts toward the {w} aspect.")
    return " ".join(out)


LONG_TEMPLATE = rules(2500) + "\n\n" + TEMPLATE
SIM = dict(ttft_ms=150, tokens_per_s=400, jitter_ms=50, seed=7, batch_seconds=1.0)
HAS_PACK = "pack" in inspect.signature(chat_spec).parameters


def ways() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(name, the estimate's way, apply options, simulator knobs) for each way."""
    found = [("per row, no prompt cache", "per row", {}, {"prompt_caching": False}),
             ("per row, prompt cached", "per row, prompt cached", {}, {})]
    found += [(f"packed {k}", f"packed {k}", {"pack": k}, {}) for k in (5, 10, 20)]
    found += [("flex", "flex", {"tier": "flex"}, {}),
              ("batch", "batch", {"mode": "batch", "poll_interval": 0.2}, {})]
    return found


def options_for(model: str, sim: Simulator, **more: Any) -> dict[str, Any]:
    # no max_tokens: a bound sized for one label would cut a packed answer (k labels)
    return dict(model=model, base_url=sim.base_url, api_key=KEY, cache=False, concurrency=32, **more)


def estimated(df, template: str, model: str) -> dict[str, float]:
    """The estimate's dollars for each way (``df.llm.estimate``'s "<way> $" columns), after a
    pilot of 20 rows (it measures the answers' length and corrects our token count)."""
    with Simulator(**SIM) as sim, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row = df.llm.estimate(template, pilot=20, **options_for(model, sim)).iloc[0]
    # the pilot's 20 rows are not in the estimate (they are answered): scale to all rows
    scale = len(df) / row["requests"] if row["requests"] else 1.0
    return {name[:-2]: value * scale for name, value in row.items() if str(name).endswith(" $")}


def measure(df, template: str, model: str, options: dict[str, Any],
            knobs: dict[str, Any]) -> tuple[float, float, int]:
    """(dollars, seconds, requests answered) for one way on a fresh simulator."""
    with Simulator(**SIM, **knobs) as sim:
        common = options_for(model, sim, progress=False, **options)
        start = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = df.llm.apply(template, **common)
        seconds = time.monotonic() - start
        requests = sim.stats()["answered"]  # chat requests and batch lines answered
        return out.llm.report.cost, seconds, requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--model", default="openai/gpt-4.1-mini")
    args = parser.parse_args()
    reviews = load_reviews()
    df = reviews.sample(args.rows, replace=len(reviews) < args.rows, random_state=1).reset_index(drop=True)
    df["text"] = [f"{t} (#{i})" for i, t in enumerate(df["text"])]  # every row its own prompt
    print(machine_line())
    print(f"{args.rows} rows, {args.model}, simulator {SIM}; pack= available: {HAS_PACK}\n")
    for title, template in (("demo task", TEMPLATE), ("demo task + 2,500-token instruction", LONG_TEMPLATE)):
        rows = []
        predicted = estimated(df, template, args.model)
        for name, way, options, knobs in ways():
            guess = predicted.get(way)
            guess_k = f"{guess / args.rows * 1000:.4f}" if guess is not None else "n/a"
            if "pack" in options and not HAS_PACK:
                rows.append([name, "not available", guess_k, "", "", ""])
                continue
            dollars, seconds, requests = measure(df, template, args.model, options, knobs)
            per_k = dollars / args.rows * 1000
            rows.append([name, f"{per_k:.4f}", guess_k, f"{seconds:.1f}",
                         f"{requests / args.rows:.3f}", f"{args.rows / seconds:.0f}"])
        print(f"## {title}\n")
        print(table(["way", "$ per 1,000 rows", "estimated $ per 1,000", "wall s",
                     "requests per row", "rows/s"], rows))
        print()


if __name__ == "__main__":
    main()
