"""``params={...}``: other request parameters (``top_p``, ``seed``, ``stop``,
``reasoning_effort``, ...), sent as given in every request body and part of the cache key.

Keys the library sets itself are refused before anything is sent, naming the option to use:
sent twice they would fight, or change what the cache and the budget count on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import InputError

MANAGED = {
    "model": "use model=",
    "messages": "use the template (and system=)",
    "system": "use system=",
    "prompt": "use the template",
    "max_tokens": "use max_tokens=",
    "max_completion_tokens": "use max_tokens=",
    "max_output_tokens": "use max_tokens=",
    "temperature": "use temperature=",
    "response_format": "use schema=",
    "output_config": "use schema=",
    "tools": "use schema=",
    "tool_choice": "use schema=",
    "stream": "no option: answers arrive whole, the panel shows progress per row",
    "n": "no option: one answer per row (cache='refresh' asks again)",
}


def check_params(params: Any) -> dict[str, Any]:
    """``params=`` -> a plain dict, or InputError naming what is wrong."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise InputError(f"params= must be a dict of request parameters, not {type(params).__name__}")
    out: dict[str, Any] = {}
    for name, value in params.items():
        if not isinstance(name, str):
            raise InputError(f"params= keys must be strings, not {name!r}")
        if name in MANAGED:
            raise InputError(f"params={{{name!r}: ...}}: the library sets {name!r} itself; "
                             f"{MANAGED[name]}")
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise InputError(f"params={{{name!r}: ...}} must be JSON (str, number, bool, None, "
                             f"list, dict), not {type(value).__name__}") from None
        out[name] = value
    return out
