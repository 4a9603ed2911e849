"""One line on every option of ``df.llm.*``, and the signatures ``help()`` shows.

The accessor's methods take ``**options`` (the same options reach several layers), so
``help(df.llm.apply)`` would show only ``**options: Any``. The options' names and defaults are
read from the functions that take them (``runs.chat_spec.chat_spec`` and the accessor's own
signatures) and joined with the lines here into ``__signature__`` and a docstring section, so
an option added to a run shows up at once (tests/test_ergonomics.py requires a line for each).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

OPTION_DOCS: dict[str, str] = {
    "model": "'provider/model' (openai/, anthropic/, deepseek/, gemini/; any name with base_url=), "
             "or a list of them to run side by side",
    "output": "name of the answer column; failed rows' reasons go to f'{output}_error'",
    "schema": "a pydantic model or {'field': type}: one typed column per field",
    "schema_retries": "how often an answer that does not fit schema= is asked again",
    "system": "a system prompt, the same for every row",
    "temperature": "sampling temperature, sent when given",
    "max_tokens": "the output limit per answer (anthropic/ models get 1,024 unless given)",
    "params": "other request parameters (top_p, seed, stop, reasoning_effort, ...), part of the cache key",
    "base_url": "an OpenAI-compatible endpoint (a gateway, vLLM, Ollama); default from the environment",
    "api_key": "the provider's key; default from OPENAI_API_KEY / ANTHROPIC_API_KEY / ...; never shown",
    "concurrency": "requests in flight at most",
    "rpm": "your account's requests per minute (learned from headers and 429s when not given)",
    "tpm": "your account's tokens per minute (learned when not given)",
    "max_retries": "retries for 5xx, timeouts and dropped connections (429s are paced, not counted)",
    "timeout": "seconds one request may take",
    "missing": "a row with a missing value: 'skip' (not sent, its error says why) or 'empty' (sent as '')",
    "budget": "dollars the run may spend at most: refused before sending when the estimate exceeds it, "
              "stopped before a request could cross it",
    "cache": "True (the default cache file), a path, False (no cache) or 'refresh' (ask again, overwrite)",
    "prices": "{model: (input, output) dollars per million tokens} for models without a known price",
    "mode": "'realtime', or 'batch' for the providers' half-price batch APIs (answers within 24 h)",
    "poll_interval": "seconds between looks at a batch job",
    "pack": "rows per request (an int, or 'auto'): the instructions are sent once per pack and every "
            "answer is checked by its row's id; None sends one row per request",
    "tier": "'flex' for OpenAI's flex processing (batch prices, slower answers) where the model has it",
    "progress": "None/True/'auto' (a panel in a notebook, a tqdm bar elsewhere), 'widget', 'tqdm' or False (none)",
    "usage": "add f'{output}_input_tokens', f'{output}_output_tokens' and f'{output}_cost' columns",
    "pilot": "first run N evenly spread rows for real and plan the rest from their usage",
    "confirm": "submit only: send nothing until job.start() (or the panel's Run button)",
    "dimensions": "embed only: the vectors' length, for models that can shorten them",
    "encoding_format": "embed only: how vectors travel ('base64' is smaller than 'float')",
    "as_array": "embed only: an (n_rows, dim) float32 array instead of a Series of vectors",
    "n": "preview only: how many rows to render",
}

NOT_OPTIONS = frozenset({"self", "df", "template", "columns", "value_field", "need_key",
                         "check_budget", "label"})


def parameters(*functions: Callable[..., Any], skip: Iterable[str] = ()) -> list[inspect.Parameter]:
    """The keyword options ``functions`` take, first mention first, as keyword-only parameters
    with their defaults (required ones first, as Python wants)."""
    seen: dict[str, inspect.Parameter] = {}
    skipped = NOT_OPTIONS | set(skip)
    for function in functions:
        for p in inspect.signature(function).parameters.values():
            if (p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in skipped
                    and p.name not in seen):
                seen[p.name] = p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
    found = list(seen.values())
    return ([p for p in found if p.default is inspect.Parameter.empty]
            + [p for p in found if p.default is not inspect.Parameter.empty])


def document(method: Callable[..., Any], options: list[inspect.Parameter]) -> None:
    """Give ``method`` (which takes ``**options``) a signature listing ``options`` and a
    docstring section with each one's default and line."""
    own = inspect.signature(method)
    head = [p for p in own.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    names = {p.name for p in head}
    keyword = [p for p in own.parameters.values() if p.kind is p.KEYWORD_ONLY]
    extra = [p for p in options if p.name not in names and p.name not in {k.name for k in keyword}]
    merged = keyword + extra
    merged = ([p for p in merged if p.default is inspect.Parameter.empty]
              + [p for p in merged if p.default is not inspect.Parameter.empty])
    method.__signature__ = own.replace(parameters=head + merged)  # type: ignore[attr-defined]
    lines = ["", "Options (keyword only):"]
    for p in merged:
        default = "required" if p.default is inspect.Parameter.empty else f"default {p.default!r}"
        lines.append(f"    {p.name} ({default}): {OPTION_DOCS.get(p.name, '')}")
    method.__doc__ = inspect.cleandoc(method.__doc__ or "") + "\n" + "\n".join(lines)


def document_methods(classes: Iterable[type], chat: tuple[Callable[..., Any], ...],
                     embed: tuple[Callable[..., Any], ...]) -> None:
    """``document`` every method of the accessor ``classes``: the chat calls with the options of
    ``chat``'s functions, ``embed``/``aembed`` with ``embed``'s."""
    chat_options, embed_options = parameters(*chat), parameters(*embed)
    for cls in classes:
        for name in ("apply", "aapply", "answers", "estimate", "submit", "preview"):
            if hasattr(cls, name):
                skip = {"pilot"} if name == "preview" else set()
                document(getattr(cls, name), [p for p in chat_options if p.name not in skip])
        for name in ("embed", "aembed"):
            document(getattr(cls, name), embed_options)
