"""Request-body checks with OpenAI's wording, so clients meet the 400s they will meet live."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_FORMAT_TYPES = ("text", "json_object", "json_schema")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


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
    tier = body.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        return Invalid(
            f"Invalid value: '{tier}'. Supported values are: "
            + ", ".join(f"'{t}'" for t in SERVICE_TIERS) + ".",
            "service_tier",
            "invalid_value",
        )
    key = body.get("prompt_cache_key")
    if key is not None and not isinstance(key, str):
        return Invalid("Invalid type for 'prompt_cache_key': expected a string.",
                       "prompt_cache_key", "invalid_type")
    return check_response_format(body.get("response_format"))


def check_response_format(fmt: Any) -> Invalid | None:
    """``response_format`` as OpenAI checks it; ``strict`` schemas must be fully closed.

    (OpenAI also wants the word "json" in the messages for ``json_object``; the simulator
    does not insist, so short demo prompts keep working.)
    """
    if fmt is None:
        return None
    where = "response_format"
    if not isinstance(fmt, dict):
        return Invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    kind = fmt.get("type")
    if kind not in _FORMAT_TYPES:
        return Invalid(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and "
            "'json_schema'.",
            f"{where}.type",
            "invalid_value",
        )
    if kind != "json_schema":
        return None
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        return Invalid(
            f"Missing required parameter: '{where}.json_schema'.",
            f"{where}.json_schema",
            "missing_required_parameter",
        )
    name = spec.get("name")
    if name is None:
        return Invalid(
            f"Missing required parameter: '{where}.json_schema.name'.",
            f"{where}.json_schema.name",
            "missing_required_parameter",
        )
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        return Invalid(
            f"Invalid '{where}.json_schema.name': string does not match pattern. Expected a "
            f"string that matches the pattern '{_SCHEMA_NAME.pattern}'.",
            f"{where}.json_schema.name",
            "invalid_value",
        )
    schema = spec.get("schema", {})
    if not isinstance(schema, dict):
        return Invalid(
            f"Invalid type for '{where}.json_schema.schema': expected an object.",
            f"{where}.json_schema.schema",
            "invalid_type",
        )
    if spec.get("strict") is True and (problem := strict_problem(schema)):
        return Invalid(f"Invalid schema for response_format '{name}': {problem}", where, None)
    return None


def strict_problem(schema: dict[str, Any]) -> str | None:
    """What OpenAI's strict mode refuses in a schema: a root that is not an object, or an
    object not closed with ``additionalProperties: false`` or not requiring every property."""
    if schema.get("type") != "object":
        return (
            "schema must be a JSON Schema of 'type: \"object\"', "
            f"got 'type: \"{schema.get('type')}\"'."
        )
    for context, node in schema_nodes(schema):
        if not is_object(node):
            continue
        where = f"In context={context!r}, "
        if node.get("additionalProperties") is not False:
            return where + "'additionalProperties' is required to be supplied and to be false."
        props = node.get("properties") or {}
        required = node.get("required")
        missing = [k for k in props if not isinstance(required, list) or k not in required]
        if missing:
            return (
                where + "'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
    return None


def is_object(node: dict[str, Any]) -> bool:
    """Whether a schema node describes an object (by type, or by listing properties)."""
    kind = node.get("type")
    return kind == "object" or (isinstance(kind, list) and "object" in kind) or (
        kind is None and "properties" in node
    )


def schema_nodes(
    node: Any, context: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every subschema with its path, named the way OpenAI's errors name it."""
    if not isinstance(node, dict):
        return
    yield context, node
    for key in ("$defs", "definitions", "properties"):
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                yield from schema_nodes(sub, (*context, key, name))
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], (*context, "items"))
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield from schema_nodes(sub, (*context, key, str(i)))


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
