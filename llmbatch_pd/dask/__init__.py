"""``ddf.llm`` on dask.dataframe (``pip install llmbatch-pd[dask]``): the pandas path run per
partition, with one coordinator per run for the whole cluster's pace, budget and stops."""
