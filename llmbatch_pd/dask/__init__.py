"""``ddf.llm`` on dask.dataframe (``pip install llmbatch-pd[dask]``): the pandas path run per
partition, with one coordinator per run for the whole cluster's pace, budget and stops.

``import llmbatch_pd.dask`` registers ``ddf.llm`` and ``ds.llm`` (``import llmbatch_pd`` does
too when dask.dataframe is already imported). A ``dask.distributed`` Client must be running:
the run's coordinator lives on its scheduler.

    out = ddf.llm.apply("Classify: {title}", model="openai/gpt-4.1-mini", budget=5.0)  # lazy
    frame = out.compute()            # the partitions run on the workers
    report = out.llm.wait()          # every answer in the cache file; the run's report

``ddf.llm.estimate`` counts every partition on the workers (nothing sent); ``ddf.llm.embed``
gives a lazy Series of vectors; ``ds.llm`` does the same for a Dask Series.

Modules: ``accessor`` (the calls), ``partition`` and ``embed`` (one partition on a worker),
``driver`` (the driver's thread: cache writes, report, display), ``coordinator`` + ``state``
(scheduler side) and ``link`` + ``remote`` (worker side) of the run's shared limits.
"""

from .accessor import DaskFrameLLM, DaskSeriesLLM

__all__ = ["DaskFrameLLM", "DaskSeriesLLM"]
