import asyncio

import pytest

import llmbatch_pd  # noqa: F401  (registers df.llm)
from llmbatch_pd.sim import Simulator

MODEL = "openai/gpt-4.1-mini"
KEY = "sk-test-0123456789abcdefSECRET"


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


def cancel_once_batched(sim, start) -> None:
    """Start an awaited batch run (``start()`` gives its coroutine) and cancel it shortly after
    the simulator has its job, as Ctrl+C would: the job stays open at the provider."""
    async def main() -> None:
        task = asyncio.ensure_future(start())
        while not sim.batches:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
