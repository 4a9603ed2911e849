"""The defaults of every call's options, in one place (the accessor's signatures, the run specs,
the engine and the batch runner all read them from here)."""

CONCURRENCY = 64
"""Requests in flight at once."""
MAX_RETRIES = 6
"""Retries of a request after a retryable failure (429s do not count: the limiter paces)."""
TIMEOUT = 120.0
"""Seconds a request may take, from sending to its last byte."""
FLEX_TIMEOUT = 900.0
"""``tier="flex"``: seconds a request may take (OpenAI's flex guide raises the SDK's timeout to 15 minutes)."""
TIER = None
"""``tier=``: the provider's standard tier."""
POLL_INTERVAL = 30.0
"""Seconds between a batch job's status checks (backing off)."""
EMBED_CONCURRENCY = 16
"""Embeddings requests in flight at once: each carries up to 2,048 inputs, so fewer are needed
than a chat run's CONCURRENCY."""
SCHEMA_RETRIES = 2
"""Times a row whose answer does not fit ``schema=`` is asked again."""
MISSING = "skip"
"""What a row with a missing template field does: not sent."""
OUTPUT = "llm_output"
"""The column ``apply`` writes its answers to (``schema=`` fields land under their own names)."""
EMBED_OUTPUT = "embedding"
"""The name of ``embed``'s vectors."""
