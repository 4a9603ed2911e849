"""Request-body checks with OpenAI's wording, so clients meet the 400s they will meet live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


@dataclass(frozen=True)
class Invalid:
    """A 400's message, and the ``param`` and ``code`` fields of its error body."""

    message: str
    param: str | None = None
    code: str | None = None


def check_chat(body: Any) -> Invalid | None:
    """The first problem with a chat-completions body, or None if it is acceptable."""
    if not isinstance(body, dict):
        return Invalid("Invalid type for request body: expected an object.", None, "invalid_type")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return Invalid("you must provide a model parameter", "model", None)
    messages = body.get("messages")
    if messages is None:
        return Invalid(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list):
        return Invalid(
            "Invalid type for 'messages': expected an array.", "messages", "invalid_type"
        )
    if not messages:
        return Invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "messages",
            "empty_array",
        )
    for i, message in enumerate(messages):
        if problem := _check_message(i, message):
            return problem
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
            return Invalid("Invalid type for 'temperature': expected a decimal.", "temperature", "invalid_type")
        if not 0 <= temperature <= 2:
            return Invalid(
                f"Invalid 'temperature': decimal above maximum value. Expected a value <= 2, "
                f"but got {temperature} instead.",
                "temperature",
                "decimal_above_max_value",
            )
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            return Invalid(f"Invalid type for '{name}': expected an integer.", name, "invalid_type")
        if value < 1:
            return Invalid(
                f"Invalid '{name}': integer below minimum value. "
                f"Expected a value >= 1, but got {value} instead.",
                name,
                "integer_below_min_value",
            )
    return None


def _check_message(i: int, message: Any) -> Invalid | None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        return Invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    role = message.get("role")
    if role not in _ROLES:
        return Invalid(
            f"Invalid value: '{role}'. Supported values are: "
            + ", ".join(f"'{r}'" for r in _ROLES)
            + ".",
            f"{where}.role",
            "invalid_value",
        )
    content = message.get("content")
    if content is None and role in ("assistant", "function"):
        return None
    if isinstance(content, str):
        return None
    if isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str) for p in content
    ):
        return None
    return Invalid(
        f"Invalid type for '{where}.content': expected one of a string or array of objects.",
        f"{where}.content",
        "invalid_type",
    )
