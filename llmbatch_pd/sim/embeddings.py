"""What ``POST /v1/embeddings`` answers, shaped like OpenAI's: checks, error texts, float and base64 vectors.

Vectors are deterministic: a unit vector drawn from a hash of (model, text), so a test can
compute the expected one and two clients must receive the same. Similar texts are not similar
vectors. ``dimensions`` shortens the way OpenAI documents it: cut, then re-normalise.

This module holds what an embeddings request is, not how it is served: the server's pipeline
(``server.py``: auth, body checks, quota, fault injection, the rate limiter charged with the
inputs' tokens, latency, the log) checks a request with :func:`check` and answers it with
:func:`response_body`; batch jobs on ``/v1/embeddings`` (``batches.py``) validate and answer
their lines with the same :func:`check` and :func:`response_object`. It imports neither of them,
so both can import it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import numpy as np

from .tokens import count_tokens
from .validate import Invalid

MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
NATIVE_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "gemini-embedding-001": 3072,
    "text-embedding-004": 768,
}
DEFAULT_DIMS = 1536
_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


def native_dims(model: str) -> int:
    return NATIVE_DIMS.get(model, DEFAULT_DIMS)


def vector(model: str, text: str, dimensions: int | None = None) -> np.ndarray:
    """The simulator's embedding of ``text``: unit length, float32, seeded by (model, text)."""
    seed = hashlib.blake2b(f"{model}\x00{text}".encode(), digest_size=8).digest()
    full = np.random.default_rng(int.from_bytes(seed, "little")).standard_normal(native_dims(model))
    cut = full[:dimensions] if dimensions else full
    return (cut / np.linalg.norm(cut)).astype(np.float32)


def _texts(body: dict[str, Any]) -> tuple[list[str], list[int]] | Invalid:
    """The inputs as texts and their token counts; token-id arrays count one token per id."""
    raw = body.get("input")
    if raw is None:
        return Invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        return Invalid(_INVALID_INPUT)
    if len(raw) > MAX_INPUTS:
        return Invalid(f"Invalid 'input': maximum array size is {MAX_INPUTS}, but got {len(raw)}.",
                       "input", "array_above_max_length")
    texts, counts = [], []
    for item in raw:
        if isinstance(item, str) and item:
            texts.append(item)
            counts.append(count_tokens(item))
        elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            texts.append(" ".join(map(str, item)))
            counts.append(len(item))
        else:
            return Invalid(_INVALID_INPUT)  # OpenAI's words for an empty string too
    for n in counts:
        if n > MAX_INPUT_TOKENS:
            return Invalid(
                f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, however you "
                f"requested {n} tokens ({n} in your prompt; 0 for the completion). Please reduce "
                "your prompt; or completion length.", None, "context_length_exceeded")
    total = sum(counts)
    if total > MAX_REQUEST_TOKENS:
        return Invalid(f"Requested {total} tokens, max {MAX_REQUEST_TOKENS} tokens per request",
                       None, "max_tokens_per_request")
    return texts, counts


def check(body: Any) -> tuple[str, list[str], int, int | None, str] | Invalid:
    """(model, texts, tokens, dimensions, encoding_format), or the first problem."""
    if not isinstance(body, dict):
        return Invalid("Invalid type for request body: expected an object.", None, "invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return Invalid("you must provide a model parameter", "model", None)
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        return Invalid(f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.",
                       "encoding_format", "invalid_value")
    dims = body.get("dimensions")
    if dims is not None:
        if not isinstance(dims, int) or isinstance(dims, bool):
            return Invalid("Invalid type for 'dimensions': expected an integer.", "dimensions", "invalid_type")
        if "text-embedding-3" not in model and model in NATIVE_DIMS and dims != native_dims(model):
            return Invalid("This model does not support specifying dimensions.", "dimensions", None)
        if not 1 <= dims <= native_dims(model):
            return Invalid(f"Invalid 'dimensions': expected a value between 1 and {native_dims(model)}, "
                           f"but got {dims} instead.", "dimensions", "invalid_value")
    found = _texts(body)
    if isinstance(found, Invalid):
        return found
    texts, counts = found
    return model, texts, sum(counts), dims, fmt


def response_object(model: str, texts: list[str], tokens: int, dims: int | None, fmt: str
                    ) -> dict[str, Any]:
    """The ``{"object": "list", "data": [...]}`` answer, with vectors as floats or base64
    (also the ``response.body`` of a batch job's line, so both paths give the same vectors)."""
    items = []
    for i, text in enumerate(texts):
        v = vector(model, text, dims)
        value: Any = (base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64"
                      else v.tolist())
        items.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": items, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def response_body(model: str, texts: list[str], tokens: int, dims: int | None, fmt: str) -> bytes:
    """:func:`response_object` as compact JSON bytes."""
    return json.dumps(response_object(model, texts, tokens, dims, fmt), separators=(",", ":")).encode()
