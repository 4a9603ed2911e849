"""The cache file: answers, batch jobs, vectors, history; written from one thread."""
