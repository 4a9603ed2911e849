"""Every knob of the simulator in one dataclass.

The config travels as a plain dict (to a subprocess, over ``POST /_sim/config``), so
``from_dict`` checks names and types itself instead of trusting the sender.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

FAULTS = ("fault_429", "fault_5xx", "fault_529", "fault_hang", "fault_reset", "fault_malformed",
          "fault_invalid_json")
"""The fault knobs, in the order a request's single random draw walks them."""


@dataclass(frozen=True)
class SimConfig:
    """How the simulated provider behaves. Every field has a harmless default."""

    # Latency: ttft + completion_tokens / tokens_per_s + uniform(0, jitter).
    ttft_ms: float = 100.0
    tokens_per_s: float = 0.0  # 0 means the whole answer arrives with the first token
    jitter_ms: float = 0.0
    # Answers: mean length of free-text answers, varied +-50 % by the prompt's hash.
    answer_tokens: int = 40
    # Rate limits per minute, None = unlimited; enforced over burst_seconds like OpenAI.
    rpm: int | None = None
    tpm: int | None = None
    burst_seconds: float = 1.0
    # > 0: the limits count per fixed calendar window of this many seconds instead (LiteLLM's
    # proxy counts `rpm:` per calendar minute: 60), each window allowing rpm * fixed_window_s / 60,
    # the count reset at boundaries aligned to the wall clock. A 429 then says (when it says
    # anything) how long until the next boundary.
    fixed_window_s: float = 0.0
    # What the limits say on the wire. rate_limit_headers=False sends no x-ratelimit-* /
    # anthropic-ratelimit-* header on any answer, as vLLM and many gateways do (limits still
    # apply); retry_after_on_429=False sends every 429 (limiter and fault_429 alike) without
    # retry-after / retry-after-ms, so a client learns nothing but the status.
    rate_limit_headers: bool = True
    retry_after_on_429: bool = True
    # A gateway that reports each answer's cost, as LiteLLM's proxy does: every successful
    # completion carries x-litellm-response-cost = (prompt + completion tokens) x this / 1e6
    # dollars (str(float), e.g. "5.85e-06"). None sends no such header.
    response_cost_per_mtok: float | None = None
    # Faults: per-request probabilities (their sum must stay <= 1), drawn from Random(seed).
    seed: int = 0
    fault_429: float = 0.0
    fault_5xx: float = 0.0
    fault_529: float = 0.0
    fault_hang: float = 0.0
    fault_reset: float = 0.0
    fault_malformed: float = 0.0
    # A structured answer (json_schema/json_object, Anthropic output_config or forced tool)
    # that a validating client must refuse: JSON cut short, or a required field dropped (a
    # tool call's input stays an object). Counted as fault "invalid_json"; requests that ask
    # for no JSON are never hit. Batch lines get their own dice per job and line.
    fault_invalid_json: float = 0.0
    fault_retry_after_s: float = 1.0
    hang_seconds: float = 300.0
    # Account: required bearer key (None accepts anything) and successful requests allowed.
    api_key: str | None = field(default=None, repr=False)
    quota_requests: int | None = None
    # Batch jobs: how long one takes from creation to its end (validating 10 %, in_progress,
    # finalizing 10 %), the share of its lines that fail (seeded dice per job and line), and
    # the share left unprocessed when it expires (its last lines; 0 = it never expires).
    batch_seconds: float = 1.0
    batch_fail_rate: float = 0.0
    batch_expire: float = 0.0
    # Bookkeeping. capture_requests keeps the last N requests' headers (credentials masked)
    # and bodies, to compare what different clients send (``Simulator.captured``).
    log: bool = True
    capture_requests: int = 0
    models: tuple[str, ...] = ("gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o-mini", "sim-small")
    # Growing answers (issue 13's budget check): once the simulator has answered n chat/messages
    # requests (batch lines included, counted across the whole simulator), free-text answers
    # have a mean length of `tokens` instead of answer_tokens, and an answer that picks an option
    # becomes the option followed by a justification of about that length. (n, tokens); None: off.
    answer_tokens_after: tuple[int, int] | None = None
    # Packed requests (several rows, ids per row; ``packing.py``): per-row probabilities, seeded,
    # that a row is left out of the answer, answered twice (the copy maybe with another row's
    # answer), or joined by an object whose id was never sent.
    fault_pack_drop: float = 0.0
    fault_pack_dup: float = 0.0
    fault_pack_invent: float = 0.0
    # Prompt caching (``prompt_cache.py``). OpenAI dialect: automatic, prefixes >= 1,024 tokens
    # in 128-token steps, per (model, prompt_cache_key). Anthropic: what cache_control marks,
    # when the marked prefix reaches the model's minimum (longest key the model name starts
    # with; others 1,024). prompt_caching=False answers every request uncached.
    prompt_caching: bool = True
    prompt_cache_ttl_s: float = 300.0
    anthropic_cache_min_tokens: dict[str, int] = field(default_factory=lambda: {
        "claude-haiku-4-5": 4096, "claude-opus-4-5": 4096, "claude-opus-4-6": 4096,
        "claude-opus-4-7": 4096})
    # OpenAI's flex tier: service_tier="flex" is accepted for these models only (others get a
    # 400), answered flex_slowdown times slower, and refused with a 429 "Resource Unavailable"
    # (code resource_unavailable, not charged) at the rate fault_flex_429 (seeded dice).
    flex_models: tuple[str, ...] = ("gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini", "gpt-5",
                                    "gpt-5-mini")
    flex_slowdown: float = 3.0
    fault_flex_429: float = 0.0
    # A chat/messages request for a model not in ``models`` gets OpenAI's answer to an unknown
    # model: 404 {"error": {"code": "model_not_found", ...}}. Off by default: tests use many names.
    unknown_model_404: bool = False

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, hints[f.name], getattr(self, f.name)))
        self._check_ranges()

    def _check_ranges(self) -> None:
        for name in FAULTS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SimConfig.{name} must be between 0 and 1")
        if sum(getattr(self, name) for name in FAULTS) > 1.0 + 1e-9:
            raise ValueError("SimConfig fault rates must add up to at most 1")
        for name in ("rpm", "tpm", "quota_requests", "response_cost_per_mtok"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"SimConfig.{name} must be >= 0 or None")
        for name in ("batch_fail_rate", "batch_expire", "fault_pack_drop", "fault_pack_dup",
                     "fault_pack_invent", "fault_flex_429"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"SimConfig.{name} must be between 0 and 1")
        nonneg = ("ttft_ms", "tokens_per_s", "jitter_ms", "fault_retry_after_s", "hang_seconds",
                  "batch_seconds", "fixed_window_s", "prompt_cache_ttl_s", "flex_slowdown")
        for name in nonneg:
            if getattr(self, name) < 0:
                raise ValueError(f"SimConfig.{name} must be >= 0")
        if self.burst_seconds <= 0:
            raise ValueError("SimConfig.burst_seconds must be > 0")
        if self.capture_requests < 0:
            raise ValueError("SimConfig.capture_requests must be >= 0")
        if self.answer_tokens < 1:
            raise ValueError("SimConfig.answer_tokens must be >= 1")
        after = self.answer_tokens_after
        if after is not None and (len(after) != 2 or after[0] < 0 or after[1] < 1):
            raise ValueError("SimConfig.answer_tokens_after must be (requests >= 0, tokens >= 1)")
        if any(v < 0 for v in self.anthropic_cache_min_tokens.values()):
            raise ValueError("SimConfig.anthropic_cache_min_tokens values must be >= 0")

    def __hash__(self) -> int:  # a dict knob would make the generated hash fail
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """All knobs as JSON-ready values (the api_key included: the caller owns it)."""
        out = dataclasses.asdict(self)
        for name, value in out.items():
            if isinstance(value, tuple):
                out[name] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        """Build a config from a dict; unknown names raise ValueError, bad types TypeError."""
        return cls().replace(**data)

    def replace(self, **changes: Any) -> SimConfig:
        """A copy with some knobs changed, validated like a new config."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown SimConfig knob(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def public_dict(self) -> dict[str, Any]:
        """``to_dict`` with the api_key masked, for anything a person may read."""
        out = self.to_dict()
        if self.api_key is not None:
            out["api_key"] = "***"
        return out


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Check one value against its annotation, widening int to float and list to tuple."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        if value is None:
            return None
        (hint,) = (a for a in args if a is not type(None))
    ok: Any = None
    if isinstance(value, bool):
        ok = value if hint is bool else None
    elif hint is float and isinstance(value, int | float):
        ok = float(value)
    elif hint is int and isinstance(value, int):
        ok = value
    elif hint is int and isinstance(value, float) and value.is_integer():
        ok = int(value)
    elif hint is str and isinstance(value, str):
        ok = value
    elif typing.get_origin(hint) is tuple and isinstance(value, list | tuple):
        item = typing.get_args(hint)[0]
        if all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            ok = tuple(value)
    elif typing.get_origin(hint) is dict and isinstance(value, dict):
        if all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
               for k, v in value.items()):
            ok = dict(value)
    if ok is None:
        raise TypeError(f"SimConfig.{name} must be {hint.__name__}, got {value!r}")
    return ok
