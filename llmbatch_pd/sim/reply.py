"""The one answer path of the real-time endpoints and the batch lines of both APIs.

``Replier.draft`` turns a checked request into its answer (packed or not, ``packing.py``), its
prompt tokens and what it reads from and writes to the prompt cache (``prompt_cache.py``), all
decided when the request arrives; ``Replier.deliver`` then books the answer as sent: the cache
keeps its prefixes, the count of answers (``answer_tokens_after``) moves on, and a packed
request's ids go to the ``PackLog``. The server calls the two around its rate limiter and
latency; a batch job calls them line after line when it ends.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .answers import Answer, make_answer, prompt_sha
from .config import SimConfig
from .packing import PackedReply, PackLog, answer_packed, find_packed
from .prompt_cache import NO_CACHE, CacheUse, PromptCache
from .tokens import count_prompt_tokens


@dataclass(frozen=True)
class Draft:
    """An answer not sent yet, with everything its usage block and the books need."""

    model: str
    answer: Answer
    prompt_tokens: int
    sha: str
    cache: CacheUse = NO_CACHE
    packed: PackedReply | None = None
    service_tier: str | None = None


class Replier:
    """Answers requests and keeps the state answers share: prompt cache, pack log, count."""

    def __init__(self, config: Callable[[], SimConfig]) -> None:
        self.config = config
        self.cache = PromptCache()
        self.packs = PackLog()
        self.answered = 0
        self._dice = random.Random(f"pack-{config().seed}")

    def reset(self) -> None:
        """Forget the cache, the pack log and the count of answers; reseed the pack dice."""
        self.cache.clear()
        self.packs.clear()
        self.answered = 0
        self._dice = random.Random(f"pack-{self.config().seed}")

    def draft(self, api: str, body: dict[str, Any], messages: list[dict[str, Any]],
              response_format: dict[str, Any] | None, max_tokens: int | None, now: float, *,
              invalid: bool = False, dice: random.Random | None = None, sha: str | None = None,
              prompt_tokens: int | None = None) -> Draft:
        """The answer to a checked request; ``api`` is "openai" or "anthropic"; ``dice`` (a
        batch line's own) replaces the pack fault dice of real-time requests."""
        cfg, model = self.config(), body["model"]
        sha = sha or prompt_sha(messages)
        if prompt_tokens is None:
            prompt_tokens = count_prompt_tokens(messages)
        packed = find_packed(messages, response_format)
        reply = None
        if packed is not None:
            reply = answer_packed(packed, cfg, dice or self._dice, invalid=invalid,
                                  max_tokens=max_tokens)
            answer = reply.answer
        else:
            after = cfg.answer_tokens_after
            grown = after is not None and self.answered >= after[0]
            answer = make_answer(messages, model, max_tokens=max_tokens, sha=sha,
                                 answer_tokens=after[1] if after and grown else cfg.answer_tokens,
                                 response_format=response_format, invalid=invalid, verbose=grown)
        if api == "anthropic":
            cache = self.cache.anthropic(model, body, now, cfg)
        else:
            cache = self.cache.openai(model, body.get("prompt_cache_key"), messages,
                                      prompt_tokens, now, cfg)
        tier = body.get("service_tier") if api == "openai" else None
        if tier is not None:
            tier = "flex" if tier == "flex" else "default"
        return Draft(model, answer, prompt_tokens, sha, cache, reply, tier)

    def deliver(self, draft: Draft, now: float, entry: dict[str, Any] | None = None,
                **where: Any) -> None:
        """Book a draft as answered; ``entry`` (a request-log entry) gets its figures."""
        self.cache.commit(draft.cache, draft.prompt_tokens, now)
        self.answered += 1
        if draft.packed is not None:
            self.packs.add(draft.packed, **where)
        if entry is not None:  # only what happened: the log's entries keep their usual keys
            if draft.cache.read:
                entry["cached_tokens"] = draft.cache.read
            if draft.cache.write:
                entry["cache_write_tokens"] = draft.cache.write
            if draft.packed is not None:
                entry["pack_ids_sent"] = draft.packed.ids_sent
                entry["pack_ids_answered"] = draft.packed.ids_answered
