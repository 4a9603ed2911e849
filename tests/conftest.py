import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd.sim import Simulator

MODEL = "openai/gpt-4.1-mini"
KEY = "sk-test-0123456789abcdefSECRET"

_T = TypeVar("_T")

# Published list prices, dollars per million tokens (input, output), typed in by hand from the
# providers' price pages (OpenAI: platform.openai.com/docs/pricing; Anthropic: "Pricing" in the
# Claude docs; both charge half of these through their batch APIs). Tests compute bills with
# these literals, never with llmbatch_pd.planning.pricing, so a wrong price table in the library fails.
PRICES_PER_MTOK = {
    "gpt-4.1-mini": (0.40, 1.60),  # cached input $0.10
    "gpt-4.1-nano": (0.10, 0.40),  # cached input $0.025
    "gpt-4o-mini": (0.15, 0.60),
    "claude-haiku-4-5": (1.00, 5.00),  # cache read $0.10, cache write $1.25
    "text-embedding-3-small": (0.02, 0.0),
}
BATCH_DISCOUNT = 0.5


def bill(entries: Iterable[dict[str, Any]], prices: dict[str, tuple[float, float]] | None = None,
         *, batch: bool = False) -> float:
    """Dollars for the answers in the simulator's request log, by hand: each 200 entry's
    prompt and completion tokens (what the simulator returned as usage) at the model's price."""
    prices = prices or PRICES_PER_MTOK
    total = 0.0
    for e in entries:
        if e["status"] != 200 or e.get("batch") or e["model"] is None:
            continue
        price_in, price_out = prices[e["model"]]
        total += e["prompt_tokens"] * price_in + e.get("completion_tokens", 0) * price_out
    return total / 1e6 * (BATCH_DISCOUNT if batch else 1.0)


def wait_until(predicate: Callable[[], _T], timeout: float, what: str, interval: float = 0.01) -> _T:
    """Poll ``predicate`` until it gives something true and return that; fail the test, naming
    ``what`` was awaited, once ``timeout`` seconds pass. Every wait in the tests goes through here."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@contextmanager
def paused(sim: Simulator) -> Iterator[None]:
    """Hold a (thread-mode) simulator's event loop still inside the block: requests reach its
    socket but none is read or answered until the block ends. Lets a test look at a run while it
    is certainly unfinished, without betting on how fast the machine is. ``sim.log`` stays
    readable meanwhile; ``sim.stats()`` and ``sim.configure()`` would wait for the loop."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(60)

    sim._loop.call_soon_threadsafe(hold)  # the simulator's own loop thread
    assert holding.wait(30), "the simulator's loop did not stop"
    try:
        yield
    finally:
        release.set()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test gets its own cache file; none touches the user's cache directory."""
    path = tmp_path / "cache.sqlite"
    monkeypatch.setenv("LLMBATCH_PD_CACHE", str(path))
    return path


@pytest.fixture
def sim():
    with Simulator(ttft_ms=5, api_key=KEY) as s:
        yield s


@pytest.fixture
def llm(sim):
    """Keyword arguments that point a run at the simulator."""
    return {"model": MODEL, "base_url": sim.base_url, "api_key": KEY, "progress": False}


def polled_batch(sim) -> bool:
    """Whether the simulator has created a batch job and been asked for its status since."""
    ids = {job["id"] for job in sim.batches}
    return any(e["path"].rsplit("/", 1)[-1] in ids and e["path"].startswith(("/v1/batches/",
                                                                            "/v1/messages/batches/"))
               for e in sim.log)


def cancel_once_batched(sim, start) -> None:
    """Start an awaited batch run (``start()`` gives its coroutine) and cancel it once the
    simulator has its job and has been asked how it is doing, as Ctrl+C would while the run
    waits: the job stays open at the provider."""
    async def main() -> None:
        task = asyncio.ensure_future(start())
        await asyncio.to_thread(wait_until, lambda: polled_batch(sim) or task.done(), 30,
                                "the run to create its batch job and poll it")
        assert not task.done(), "the run ended before it could be cancelled"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
