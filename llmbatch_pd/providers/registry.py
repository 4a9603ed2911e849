"""``provider/model`` names -> a Provider, built once with its preset's capabilities.

The rule (README, "Providers and batch mode"):

1. A known provider prefix (``openai/``, ``anthropic/``, ``deepseek/``, ``gemini/``) picks the
   wire protocol, the key variable, the price and the capabilities (a batch API, embeddings,
   structured output with a JSON schema or JSON mode only), and is
   stripped: everything after the first ``/`` is sent as ``model``, with or without
   ``base_url=``. So ``openai/gpt-4.1-mini`` sends ``gpt-4.1-mini``, and, as in LiteLLM,
   ``openai/openai/gpt-4o`` sends ``openai/gpt-4o`` over OpenAI's protocol: the way to send
   any name at all, a known prefix included, to an OpenAI-compatible server.
2. With ``base_url=``, any other name (bare, or with another prefix: ``gateway/x``,
   ``openrouter/...``, ``meta-llama/Llama-3-8B``) is sent exactly as given over OpenAI's chat
   protocol to that server: no batch API, ``max_tokens``, priced only by ``prices=`` (or,
   for a bare name the price list knows, by that price).
3. Without ``base_url=``, a bare name is looked up in the price catalogue (``gpt-...`` is
   OpenAI's, ``claude-...`` Anthropic's); anything else is refused.

Capabilities per model: the preset's, plus the prompt-caching minimum
(:func:`cache_min_tokens`) and OpenAI's flex tier (:data:`FLEX_MODELS`).

Which field carries ``max_tokens``: OpenAI itself (``api.openai.com``, Azure OpenAI) refuses
``max_tokens`` on its reasoning models and reads ``max_completion_tokens``; every other
OpenAI-compatible server (vLLM, Ollama, gateways, the simulator) reads ``max_tokens``. Batch
lines always carry ``max_completion_tokens``: a batch job runs on OpenAI's own Batch API.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from ..core.errors import InputError
from ..core.secrets import Secret, secret_from
from ..planning.pricing import (
    AS_GIVEN,  # ModelRef.provider of a name sent as given (rule 2): not a prefix
)
from .anthropic import AnthropicMessages
from .base import Capabilities, Provider
from .embeddings import OpenAIEmbeddings
from .openai import OpenAIChat


@dataclass(frozen=True)
class Preset:
    dialect: type[Provider]
    base_url: str
    key_env: str
    base_url_env: str | None = None
    capabilities: Capabilities = Capabilities()


PRESETS: dict[str, Preset] = {
    "openai": Preset(OpenAIChat, "https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                     Capabilities(batch=True, embeddings=True, cache_min_tokens=1024, cache_key=True)),
    # Anthropic's native Messages API; its base URL is the root, the dialect adds /v1/messages.
    "anthropic": Preset(AnthropicMessages, "https://api.anthropic.com", "ANTHROPIC_API_KEY",
                        "ANTHROPIC_BASE_URL", Capabilities(batch=True, cache_min_tokens=1024)),
    # OpenAI's dialect: its embeddings route too (a server without one answers 404)
    "deepseek": Preset(OpenAIChat, "https://api.deepseek.com", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL",
                       Capabilities(embeddings=True, structured="json", cache_min_tokens=64)),
    # implicit caching (Gemini 2.5+); its OpenAI endpoint is not known to take prompt_cache_key
    "gemini": Preset(OpenAIChat, "https://generativelanguage.googleapis.com/v1beta/openai",
                     "GEMINI_API_KEY", "GEMINI_BASE_URL",
                     Capabilities(embeddings=True, cache_min_tokens=1024)),
}
COMPATIBLE = Preset(OpenAIChat, "", "OPENAI_API_KEY", capabilities=Capabilities(embeddings=True))
"""Any OpenAI-compatible server given as ``base_url=``: chat completions and embeddings, no
batch API."""
FLEX_MODELS = ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "o3", "o4-mini", "gpt-4.1-mini",
               "gpt-4.1-nano")
"""OpenAI models with the flex tier (and their dated snapshots). OpenAI's pricing page lists
them; the simulator's ``flex_models`` default is the same kind of list."""
_BIG_MINIMUM = re.compile(r"claude-(haiku-4-5|opus-4-([5-9]|\d\d))")


def cache_min_tokens(ref: ModelRef, preset: Preset) -> int:
    """The shortest prefix ``ref``'s API caches: Anthropic's Haiku 4.5 and Opus 4.5 and later
    need 4,096 tokens, its other models 1,024 (Anthropic's prompt-caching page); the rest is
    the preset's."""
    if ref.provider == "anthropic" and _BIG_MINIMUM.search(ref.model.lower()):
        return 4096
    return preset.capabilities.cache_min_tokens


def has_flex(ref: ModelRef) -> bool:
    """True for an ``openai/`` model OpenAI serves in the flex tier."""
    name = ref.model.lower()
    return ref.provider == "openai" and any(
        name == m or re.fullmatch(re.escape(m) + r"-\d{4}-\d{2}-\d{2}", name) for m in FLEX_MODELS)


def capabilities_for(ref: ModelRef) -> Capabilities:
    """What ``ref``'s API offers: its preset's capabilities, with the model's own."""
    preset = PRESETS.get(ref.provider, COMPATIBLE)
    return replace(preset.capabilities, cache_min_tokens=cache_min_tokens(ref, preset),
                   flex=has_flex(ref))



@dataclass(frozen=True)
class ModelRef:
    """A resolved model name: which provider (a preset, or :data:`AS_GIVEN`), and what to
    send as ``model``."""

    provider: str
    model: str

    @property
    def full(self) -> str:
        """The name as the user means it: ``provider/model``, or the name sent as given."""
        return self.model if self.provider == AS_GIVEN else f"{self.provider}/{self.model}"


def parse_model(name: str, *, base_url: str | None = None) -> ModelRef:
    if not isinstance(name, str) or not name.strip():
        raise InputError("model= must be a name like 'openai/gpt-4.1-mini'")
    name = name.strip()
    head, sep, rest = name.partition("/")
    if sep and head in PRESETS and rest:
        return ModelRef(head, rest)
    if base_url:  # any OpenAI-compatible server: send the name exactly as given
        return ModelRef(AS_GIVEN, name)
    guess = _provider_from_catalogue(name)
    if guess:
        return ModelRef(guess, name)
    raise InputError(
        f"cannot tell which provider serves {name!r}. Write it as provider/model "
        f"(providers: {', '.join(sorted(PRESETS))}), or pass base_url= to send it as given to an "
        "OpenAI-compatible server."
    )


def _provider_from_catalogue(name: str) -> str | None:
    lowered = name.lower()
    for prefix, provider in (("gpt-", "openai"), ("o1", "openai"), ("o3", "openai"), ("o4", "openai"),
                             ("text-embedding-", "openai"), ("deepseek-", "deepseek"),
                             ("gemini-", "gemini"), ("claude-", "anthropic")):
        if lowered.startswith(prefix):
            return provider
    return None


def make_provider(ref: ModelRef, *, base_url: str | None = None, api_key: str | Secret | None = None,
                  need_key: bool = True, prefix: str = "", tier: str | None = None) -> Provider:
    """The chat provider for ``ref``. ``need_key=False``: for an estimate, which sends nothing,
    a missing key is no error. ``prefix``: the template's static start (prompt caching);
    ``tier``: None, "standard" or "flex" (refused for a model without it)."""
    preset = PRESETS.get(ref.provider, COMPATIBLE)
    capabilities = capabilities_for(ref)
    check_tier(ref, tier, capabilities)
    url, key = _endpoint(ref, preset, base_url, api_key, need_key)
    field = "max_completion_tokens" if is_openai_itself(url) else "max_tokens"
    return preset.dialect(ref.model, url, key, max_tokens_field=field, key_env=preset.key_env,
                          capabilities=capabilities, prefix=prefix, tier=tier)


TIERS = ("standard", "flex")


def check_tier(ref: ModelRef, tier: object, capabilities: Capabilities) -> None:
    """``tier=``: None, "standard", or "flex" for a model that has it; refused before sending."""
    if tier is None or tier == "standard":
        return
    if tier not in TIERS:
        raise InputError(f"tier= must be one of {TIERS} (or None), not {tier!r}")
    if not capabilities.flex:
        raise InputError(
            f"tier='flex': {ref.full} has no flex tier here (OpenAI's flex serves "
            f"{', '.join('openai/' + m for m in FLEX_MODELS)}); leave tier= out")


def make_embeddings_provider(ref: ModelRef, *, base_url: str | None = None,
                             api_key: str | Secret | None = None,
                             encoding_format: str = "base64") -> OpenAIEmbeddings:
    """The embeddings provider for ``ref`` (``s.llm.embed``): the same URL and key rules as
    chat's; a provider without an embeddings API is refused before any question about its key."""
    preset = PRESETS.get(ref.provider, COMPATIBLE)
    if not preset.capabilities.embeddings:
        raise InputError(
            f"{ref.full}: {ref.provider} has no embeddings API here; use an OpenAI-compatible "
            "embeddings model such as openai/text-embedding-3-small or gemini/gemini-embedding-001")
    url, key = _endpoint(ref, preset, base_url, api_key, need_key=True)
    return OpenAIEmbeddings(ref.model, url, key, encoding_format=encoding_format,
                            key_env=preset.key_env, capabilities=preset.capabilities)


def _endpoint(ref: ModelRef, preset: Preset, base_url: str | None, api_key: str | Secret | None,
              need_key: bool) -> tuple[str, Secret | None]:
    """The URL to send to and the key to send, by the preset's rules."""
    url = base_url or (os.environ.get(preset.base_url_env) if preset.base_url_env else None) or preset.base_url
    if not url:
        raise InputError(f"{ref.full!r} is sent as given to an OpenAI-compatible server: pass base_url=")
    key = secret_from(api_key, preset.key_env)
    if key is None and need_key and not is_local(url):
        raise InputError(
            f"no API key for {ref.full}: set ${preset.key_env} or pass api_key= "
            f"(a local server given as base_url= needs none)"
        )
    return url, key


def batch_refusal(ref: ModelRef, what: str = "batch jobs") -> str:
    """Why ``mode="batch"`` is refused for ``ref``, said before anything is sent."""
    if ref.provider == AS_GIVEN:
        return (f"mode='batch': {ref.full!r} is sent as given to an OpenAI-compatible server, "
                "which has no batch API here; use mode='realtime', or write openai/<name> if "
                "the server has OpenAI's Batch API (/v1/files, /v1/batches)")
    return (f"mode='batch': {ref.full} has no batch API here ({what} work with openai/ and "
            "anthropic/ models); use mode='realtime'")


def is_openai_itself(url: str) -> bool:
    """True for OpenAI's own API (and Azure OpenAI), which want ``max_completion_tokens``."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "api.openai.com" or host.endswith(".openai.azure.com")


def is_local(url: str) -> bool:
    """True for loopback servers (the simulator, Ollama, vLLM on this machine)."""
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
