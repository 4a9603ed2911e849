"""One call from start to finish: chat rows, embeddings, batch jobs."""
