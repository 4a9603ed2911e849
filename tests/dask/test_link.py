"""A worker's link to the run's coordinator when an exchange fails (the scheduler briefly has
no handler for it: a real failed RPC): what the message carried (spend, events, a fatal
stop) is sent with the next exchange, not lost."""

from __future__ import annotations

import asyncio
import uuid

import pytest

distributed = pytest.importorskip("distributed")

from llmbatch_pd.core import errors  # noqa: E402
from llmbatch_pd.dask import coordinator as co  # noqa: E402
from llmbatch_pd.dask.link import Link  # noqa: E402
from llmbatch_pd.dask.state import error_state  # noqa: E402


def _take_handler(dask_scheduler=None):
    dask_scheduler._llmbatch_sync = dask_scheduler.handlers.pop("llmbatch_sync")


def _give_handler(dask_scheduler=None):
    dask_scheduler.handlers["llmbatch_sync"] = dask_scheduler._llmbatch_sync


def test_a_failed_sync_keeps_its_spend_and_stop_for_the_next(threads_client):
    client = threads_client
    run_id = uuid.uuid4().hex
    co.open_run(client, co.RunLimits(run_id=run_id, budget=1.0, worst_cost=0.001))
    worker = next(iter(client.cluster.workers.values()))
    link = Link(worker, run_id)

    def sync() -> bool:
        return asyncio.run_coroutine_threadsafe(link._sync(), link.loop).result(30)

    assert sync()  # the first exchange: the budget's lease
    with link.lock:  # what the partition's ledger and engine record between two syncs
        link.spent_new += 0.0123
        link.stop_report = error_state(errors.AuthenticationError("the key was refused"))
    client.run_on_scheduler(_take_handler)
    try:
        assert not sync()
    finally:
        client.run_on_scheduler(_give_handler)
    assert co.counters(client, run_id)["spent"] == 0.0  # nothing arrived yet
    assert sync()
    counts = co.counters(client, run_id)
    assert counts["spent"] == pytest.approx(0.0123)
    assert counts["stopped"] is not None and "refused" in counts["stopped"]
    co.close_run(client, run_id)
