"""Real Dask clusters for the dask tests, one of each kind per module (starting one costs
0.03 s with threads, about a second with processes): share them, keep the tests small."""

import pytest

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def threads_client():
    """Two workers of two threads in this process (the scheduler too)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def process_client():
    """Two worker processes of two threads under nannies (a killed one is restarted)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        yield client
