"""OpenAI's ``POST /embeddings``, and the OpenAI-compatible servers that serve it (Gemini's
OpenAI endpoint, gateways, vLLM, the simulator).

One request carries many inputs (``request.params["input"]``); the reply's ``vectors`` hold one
float32 array per input, in input order. We ask for ``encoding_format: "base64"`` as the
official SDK does: little-endian float32 bytes are about 4x smaller than JSON floats and decode
without parsing a number per dimension. Servers that ignore it and send float lists work too.
Errors and rate-limit headers are OpenAI's, so they are parsed by :class:`OpenAIChat`'s code.

Batch jobs (``mode="batch"``, half price) are OpenAI's Batch API on ``/v1/embeddings``: the
same code as chat's (:class:`OpenAIBatches`), with each line's body this dialect's ``_body``
and each result parsed by its ``_reply``. OpenAI also caps an embeddings job at 50,000
inputs summed over its requests, so the runner weighs each request by its inputs.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from ..core import errors
from ..core.secrets import Secret
from ..core.types import Reply, Request, Usage
from .base import Provider
from .openai import OpenAIBatches, OpenAIChat


class OpenAIEmbeddings(OpenAIBatches, Provider):
    name = "openai-embeddings"
    key_env = "OPENAI_API_KEY"
    encoding_format = "base64"

    def __init__(self, model: str, base_url: str, api_key: Secret | None, *,
                 encoding_format: str = "base64", **declared: Any) -> None:
        super().__init__(model, base_url, api_key, **declared)  # key_env, capabilities
        if encoding_format not in ("base64", "float"):
            raise errors.InputError(f"encoding_format must be 'base64' or 'float', not {encoding_format!r}")
        self.encoding_format = encoding_format
        self._url = f"{self.base_url}/embeddings"
        self._auth: dict[str, str] = {}
        if api_key is not None:
            self._auth["authorization"] = f"Bearer {api_key.reveal()}"
        self._headers = {"content-type": "application/json", **self._auth}

    # the same wire errors and headers as chat completions: one implementation
    _error = OpenAIChat._error
    rate_limits = OpenAIChat.rate_limits

    batch_endpoint = "/v1/embeddings"
    max_batch_inputs = 50_000
    """OpenAI: at most 50,000 embedding inputs across all requests of one batch job."""

    def batch_inputs(self, request: Request) -> int:
        """What a request weighs against :attr:`max_batch_inputs`: its texts."""
        return len(request.params["input"])

    def _is_error_envelope(self, data: dict[str, Any]) -> bool:
        return "error" in data and "data" not in data

    def _body(self, request: Request) -> dict[str, Any]:
        # the SDK's field order: model, input, dimensions, encoding_format
        body: dict[str, Any] = {"model": self.model, "input": request.params["input"]}
        if request.params.get("dimensions") is not None:
            body["dimensions"] = request.params["dimensions"]
        body["encoding_format"] = self.encoding_format
        return body

    def _reply(self, data: dict[str, Any]) -> Reply:
        try:
            items = sorted(data["data"], key=lambda item: int(item.get("index", 0)))
            vectors = [_vector(item["embedding"]) for item in items]
            u = data.get("usage") or {}
            usage = Usage(input_tokens=int(u.get("prompt_tokens") or u.get("total_tokens") or 0))
        except (KeyError, TypeError, AttributeError, ValueError, binascii.Error) as exc:
            raise errors.MalformedResponse(f"unexpected embeddings response: {exc!r}") from None
        return Reply("", usage, None, data.get("model"), vectors=vectors)


def _vector(value: Any) -> np.ndarray:
    """One embedding as float32, from base64 (little-endian float32) or a list of floats."""
    if isinstance(value, str):
        raw = base64.b64decode(value, validate=True)
        if len(raw) % 4:
            raise ValueError(f"base64 embedding of {len(raw)} bytes is not float32")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32, copy=False)
    if isinstance(value, list):
        return np.asarray(value, dtype=np.float32)
    raise TypeError(f"embedding is a {type(value).__name__}, not a list or base64 string")
