"""``provider/model`` names -> a configured Provider.

The first path segment picks the provider preset and the rest is sent as the model name, as
LiteLLM does: ``openai/gpt-4.1-mini`` sends ``gpt-4.1-mini`` to OpenAI, and
``openai/meta-llama/Llama-3-8B`` with ``base_url=`` sends ``meta-llama/Llama-3-8B`` to any
OpenAI-compatible server.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InputError
from .providers.anthropic import AnthropicMessages
from .providers.base import Provider
from .providers.openai import OpenAIChat
from .secrets import Secret, secret_from


@dataclass(frozen=True)
class Preset:
    dialect: type[Provider]
    base_url: str
    key_env: str
    base_url_env: str | None = None
    max_tokens_field: str = "max_tokens"
    batch: bool = False  # has a batch API that mode="batch" can use
    json_schema: bool = True  # takes a JSON schema for structured output (else JSON mode only)


PRESETS: dict[str, Preset] = {
    "openai": Preset(OpenAIChat, "https://api.openai.com/v1", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                     max_tokens_field="max_completion_tokens", batch=True),
    # Anthropic's native Messages API; its base URL is the root, the dialect adds /v1/messages.
    "anthropic": Preset(AnthropicMessages, "https://api.anthropic.com", "ANTHROPIC_API_KEY",
                        "ANTHROPIC_BASE_URL", batch=True),
    "deepseek": Preset(OpenAIChat, "https://api.deepseek.com", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL",
                       json_schema=False),
    "gemini": Preset(OpenAIChat, "https://generativelanguage.googleapis.com/v1beta/openai",
                     "GEMINI_API_KEY", "GEMINI_BASE_URL"),
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model name: which provider, and what to send as ``model``."""

    provider: str
    model: str

    @property
    def full(self) -> str:
        return f"{self.provider}/{self.model}"


def parse_model(name: str, *, base_url: str | None = None) -> ModelRef:
    if not isinstance(name, str) or not name.strip():
        raise InputError("model= must be a name like 'openai/gpt-4.1-mini'")
    name = name.strip()
    head, sep, rest = name.partition("/")
    if sep and head in PRESETS and rest:
        return ModelRef(head, rest)
    if base_url:  # any OpenAI-compatible server: send the name as it is
        return ModelRef("openai", name)
    guess = _provider_from_catalogue(name)
    if guess:
        return ModelRef(guess, name)
    raise InputError(
        f"cannot tell which provider serves {name!r}. Write it as provider/model "
        f"(providers: {', '.join(sorted(PRESETS))}), or pass base_url= for an OpenAI-compatible server."
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
                  need_key: bool = True) -> Provider:
    """``need_key=False``: for an estimate, which sends nothing, a missing key is no error."""
    preset = PRESETS[ref.provider]
    url = base_url or (os.environ.get(preset.base_url_env) if preset.base_url_env else None) or preset.base_url
    key = secret_from(api_key, preset.key_env)
    if key is None and need_key and not is_local(url):
        raise InputError(
            f"no API key for {ref.full}: set ${preset.key_env} or pass api_key= "
            f"(a local server given as base_url= needs none)"
        )
    provider = preset.dialect(ref.model, url, key, max_tokens_field=preset.max_tokens_field)
    provider.key_env = preset.key_env
    provider.supports_batch = preset.batch
    provider.schema_in_prompt = not preset.json_schema
    return provider


def is_local(url: str) -> bool:
    """True for loopback servers (the simulator, Ollama, vLLM on this machine)."""
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
