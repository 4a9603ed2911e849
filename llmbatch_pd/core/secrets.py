"""API keys that cannot leak by accident: no repr, str or pickle shows the value."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit


class Secret:
    """Holds a key; only ``reveal()`` gives it back, for the one header that needs it."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "api_key=") -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def scrub(self, text: str) -> str:
        """Remove the key from text that came back from a server or a library."""
        return text.replace(self._value, "***") if self._value and text else text

    def __repr__(self) -> str:
        return f"Secret(from {self.source}, ***)"

    __str__ = __repr__

    def __reduce__(self):  # pragma: no cover - refusing is the behaviour
        raise TypeError("a Secret cannot be pickled")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def secret_from(value: str | Secret | None, env_var: str | None) -> Secret | None:
    """The key passed in, else the one in ``env_var``, else None."""
    if isinstance(value, Secret):
        return value
    if value:
        return Secret(value)
    if env_var and os.environ.get(env_var):
        return Secret(os.environ[env_var], source=env_var)
    return None


def safe_url(url: str) -> str:
    """A URL to show in a message or repr: no user info and no query (either may hold a
    credential, ``https://user:token@host/v1?key=...``)."""
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "the configured base_url"
