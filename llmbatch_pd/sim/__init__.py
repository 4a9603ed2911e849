"""A loopback OpenAI- and Anthropic-compatible provider for tests, demos and benchmarks.

It answers ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic)
deterministically, counts tokens, sleeps a configurable latency, enforces RPM/TPM buckets
with each API's rate-limit headers and 429s, and injects faults (429, 5xx, 529, hangs,
connection resets, malformed bodies) at seeded rates, so every test of the engine runs here
without a network or an API key. It also serves both batch APIs (OpenAI's Files + Batches,
Anthropic's Message Batches; ``batches.py``), whose jobs run for ``batch_seconds``. Requests
that pack several rows under ids are answered row by row, with faults that drop, duplicate or
invent ids (``packing.py``); prompts are cached as OpenAI (automatic) and Anthropic
(``cache_control``) bill it (``prompt_cache.py``); OpenAI's flex tier is slower and may refuse
for capacity; answers can grow long after a number of requests (``answer_tokens_after``).
It imports nothing from the rest of llmbatch_pd.

    with Simulator(fault_429=0.05) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-test")
        claude = anthropic.Anthropic(base_url=sim.anthropic_url, api_key="sk-test")
"""

from .config import SimConfig
from .server import SimServer, serve
from .simulator import Simulator

__all__ = ["SimConfig", "SimServer", "Simulator", "serve"]
