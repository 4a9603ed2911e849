"""``schema=``: the answer as fields, checked by pydantic, sent as the JSON schema each API wants.

A user gives a pydantic model or a dict of field name -> type. We send its JSON schema in the
form the provider accepts (OpenAI's strict ``json_schema``: every object closed with
``additionalProperties: false`` and every property required; Anthropic's ``output_config``
schema with unsupported keywords moved into descriptions) and validate each answer against the
model, so a row holds either every field with the right type or an error. The transforms follow
what the official SDKs do (``openai.lib._pydantic.to_strict_json_schema``,
``anthropic.lib._parse._transform.transform_schema``); tests/core/test_structured.py compares them.
No pandas here: the accessor turns the validated dicts into columns.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import enum
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import pydantic

from . import errors

MAX_ERROR_CHARS = 300


class OutputSchema:
    """A validated ``schema=``: the pydantic model, its JSON schema, and how to check answers."""

    def __init__(self, model: type[pydantic.BaseModel]) -> None:
        self.model = model
        self.name = _schema_name(model.__name__)
        try:
            self.json_schema = model.model_json_schema()
        except pydantic.PydanticUserError as exc:
            raise errors.InputError(f"schema=: {model.__name__} has no JSON schema: {exc}") from None
        self.fields: tuple[str, ...] = tuple(model.model_fields)
        if not self.fields:
            raise errors.InputError(f"schema=: {model.__name__} has no fields")
        self.kinds = {name: column_kind(info.annotation) for name, info in model.model_fields.items()}

    @classmethod
    def from_user(cls, schema: Any) -> OutputSchema:
        """A pydantic model class, or ``{"field": type, ...}`` (built into one)."""
        if isinstance(schema, OutputSchema):
            return schema
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            return cls(schema)
        if isinstance(schema, Mapping):
            if not schema:
                raise errors.InputError("schema= needs at least one field")
            fields: dict[str, Any] = {}
            for name, kind in schema.items():
                if not isinstance(name, str) or not name.isidentifier():
                    raise errors.InputError(f"schema=: field name {name!r} is not a valid identifier")
                fields[name] = (kind, ...)
            try:
                model = pydantic.create_model("Output", **fields)
                model.model_json_schema()
            except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
                raise errors.InputError(f"schema=: {_first_line(exc)}") from None
            return cls(model)
        raise errors.InputError(
            "schema= must be a pydantic model class or a dict of field name to type, "
            f"like {{'sentiment': str, 'score': float}}; not {type(schema).__name__}")

    def openai_format(self) -> dict[str, Any]:
        """``response_format`` for OpenAI chat completions (and compatible servers)."""
        return {"type": "json_schema",
                "json_schema": {"schema": openai_strict(self.json_schema), "name": self.name,
                                "strict": True}}

    def instruction(self) -> str:
        """For JSON-mode APIs (DeepSeek): the schema spelled out in the system prompt, which
        also carries the word "json" that JSON mode requires."""
        return ("Answer with one JSON object and nothing else, matching this JSON schema: "
                + json.dumps(self.json_schema, ensure_ascii=False, separators=(",", ":")))

    def anthropic_schema(self) -> dict[str, Any]:
        """The schema for Anthropic's ``output_config.format`` or a forced tool's input."""
        return anthropic_transform(self.json_schema)

    def check(self, text: str | None) -> dict[str, Any]:
        """The answer as a dict of validated field values; InvalidOutput when it is not one."""
        if text is None:
            raise errors.InvalidOutput("the model returned no answer")
        try:
            value = self.model.model_validate_json(text)
        except pydantic.ValidationError as exc:
            raise errors.InvalidOutput(_describe(exc, text)) from None
        return {name: getattr(value, name) for name in self.fields}

    def __repr__(self) -> str:
        return f"OutputSchema({self.model.__name__}: {', '.join(self.fields)})"


PACKED_NAME = "packed_rows"
"""The schema name of a packed request's answer (``pack=``; CONTRACTS C1)."""


class PackedSchema(OutputSchema):
    """``pack=``: the answer to several rows at once, ``{"rows": [{"id": ..., "answer": ...}]}``,
    or with ``schema=`` each item holding ``id`` and the user's fields instead of ``answer``.
    Sent like any schema (strict ``json_schema``, ``output_config``, a forced tool), named
    ``packed_rows``. ``check`` accepts any answer of that outer shape; each item is judged
    on its own (``item``), so one bad row does not throw the others away."""

    def __init__(self, user: OutputSchema | None = None) -> None:
        self.user = user
        self.model = None  # type: ignore[assignment]
        self.name = PACKED_NAME
        if user is None:
            properties: dict[str, Any] = {"answer": {"type": "string"}}
            required = ["answer"]
            defs = None
        else:
            if "id" in user.fields:
                raise errors.InputError("pack= with schema=: a schema field named 'id' would clash "
                                        "with the row ids of a packed answer; rename it")
            properties = dict(user.json_schema.get("properties", {}))
            required = list(user.json_schema.get("required", list(properties)))
            defs = user.json_schema.get("$defs")
        item = {"type": "object", "properties": {"id": {"type": "string"}, **properties},
                "required": ["id", *required], "additionalProperties": False}
        self.json_schema = {"type": "object", "properties": {"rows": {"type": "array", "items": item}},
                            "required": ["rows"], "additionalProperties": False}
        if defs:
            self.json_schema["$defs"] = defs
        self.fields = user.fields if user is not None else ("answer",)
        self.kinds = user.kinds if user is not None else {"answer": "str"}

    def check(self, text: str | None) -> dict[str, Any]:
        """The answer's items (``{"rows": [...]}``); InvalidOutput when it is not of that shape."""
        if text is None:
            raise errors.InvalidOutput("the model returned no answer")
        try:
            value = json.loads(text)
        except ValueError as exc:
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise errors.InvalidOutput(f"packed answer is not JSON ({exc}); answer was {json.dumps(shown)}"[
                :MAX_ERROR_CHARS]) from None
        if not isinstance(value, dict) or not isinstance(value.get("rows"), list):
            raise errors.InvalidOutput("packed answer has no \"rows\" array")
        return value

    def item(self, obj: Any) -> str:
        """One item of a packed answer (its ``id`` removed) as a single row's answer text:
        the answer string, or with ``schema=`` the fields as JSON (checked by the user's
        schema). InvalidOutput when it is not one."""
        if not isinstance(obj, dict):
            raise errors.InvalidOutput("a packed answer's item is not an object")
        if self.user is None:
            answer = obj.get("answer")
            if not isinstance(answer, str):
                raise errors.InvalidOutput("a packed answer's item has no \"answer\" string")
            return answer
        fields = {k: v for k, v in obj.items() if k != "id"}
        text = json.dumps(fields, ensure_ascii=False)
        self.user.check(text)
        return text

    def __repr__(self) -> str:
        return f"PackedSchema({self.user!r})"


def column_kind(annotation: Any) -> str:
    """What kind of column a field makes: int, float, bool, str, category, datetime, date or
    object. ``X | None`` is the kind of X (the columns are nullable anyway)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return column_kind(inner[0]) if len(inner) == 1 else "object"
    if origin is typing.Annotated:
        return column_kind(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        return "category" if values and all(isinstance(v, str) for v in values) else "object"
    if isinstance(annotation, type):
        if issubclass(annotation, bool):
            return "bool"
        if issubclass(annotation, enum.Enum):
            return "category"
        if issubclass(annotation, int):
            return "int"
        if issubclass(annotation, (float, decimal.Decimal)):
            return "float"
        if issubclass(annotation, str):
            return "str"
        if issubclass(annotation, dt.datetime):
            return "datetime"
        if issubclass(annotation, dt.date):
            return "date"
    return "object"


def categories(annotation: Any) -> list[str] | None:
    """The allowed values of a Literal or Enum field (for a categorical column)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = categories(arg)
            if found is not None:
                return found
        return None
    if origin is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    return None


# -- OpenAI's strict form -------------------------------------------------------------------

def openai_strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Every object closed and fully required, ``None`` defaults dropped, a ``$ref`` with
    siblings inlined: what ``strict: true`` accepts (as the openai SDK's parse() sends it)."""
    root = copy.deepcopy(schema)
    return _strict(root, root)


def _strict(node: Any, root: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise errors.InputError(f"schema=: unexpected JSON schema part {node!r}")
    for key in ("$defs", "definitions"):
        if isinstance(node.get(key), dict):
            for sub in node[key].values():
                _strict(sub, root)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if isinstance(node.get("properties"), dict):
        node["required"] = list(node["properties"])
        node["properties"] = {k: _strict(v, root) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _strict(node["items"], root)
    if isinstance(node.get("anyOf"), list):
        node["anyOf"] = [_strict(v, root) for v in node["anyOf"]]
    if isinstance(node.get("allOf"), list):
        if len(node["allOf"]) == 1:
            node.update(_strict(node["allOf"][0], root))
            node.pop("allOf")
        else:
            node["allOf"] = [_strict(v, root) for v in node["allOf"]]
    if "default" in node and node["default"] is None:
        node.pop("default")
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        node.update({**_resolve(root, ref), **node})
        node.pop("$ref")
        return _strict(node, root)
    return node


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise errors.InputError(f"schema=: unsupported $ref {ref!r}")
    found: Any = root
    for part in ref[2:].split("/"):
        found = found[part]
    if not isinstance(found, dict):
        raise errors.InputError(f"schema=: $ref {ref!r} is not a schema")
    return found


# -- Anthropic's form -----------------------------------------------------------------------

_ANTHROPIC_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname",
                                "uri", "ipv4", "ipv6", "uuid"})


def anthropic_transform(schema: dict[str, Any]) -> dict[str, Any]:
    """The subset Anthropic's structured outputs accept; other keywords (minimum, maxLength,
    ...) move into the description, as the anthropic SDK does, so the model still sees them."""
    node = dict(schema)
    out: dict[str, Any] = {}
    defs = node.pop("$defs", None)
    if defs is not None:
        out["$defs"] = {name: anthropic_transform(sub) for name, sub in defs.items()}
    ref = node.pop("$ref", None)
    if ref is not None:
        out["$ref"] = ref
        return out
    kind = node.pop("type", None)
    any_of, one_of, all_of = node.pop("anyOf", None), node.pop("oneOf", None), node.pop("allOf", None)
    enum_values = node.get("enum")
    if isinstance(enum_values, list) and enum_values and all(_primitive(v) for v in enum_values):
        out["enum"] = list(node.pop("enum"))
    if "const" in node and _primitive(node["const"]):
        out["const"] = node.pop("const")
    literal = "enum" in out or "const" in out
    if literal:
        kind = None
    if isinstance(any_of, list):
        out["anyOf"] = [anthropic_transform(v) for v in any_of]
    elif isinstance(one_of, list):
        out["anyOf"] = [anthropic_transform(v) for v in one_of]
    elif isinstance(all_of, list):
        out["allOf"] = [anthropic_transform(v) for v in all_of]
    elif not literal:
        if kind is None:
            raise errors.InputError("schema=: every part needs a type, anyOf, enum or const")
        out["type"] = kind
    for key in ("description", "title"):
        if key in node:
            out[key] = node.pop(key)
    if kind == "object":
        out["properties"] = {k: anthropic_transform(v) for k, v in node.pop("properties", {}).items()}
        node.pop("additionalProperties", None)
        out["additionalProperties"] = False
        if "required" in node:
            out["required"] = list(node.pop("required"))
    elif kind == "string":
        fmt = node.pop("format", None)
        if fmt in _ANTHROPIC_FORMATS:
            out["format"] = fmt
        elif fmt:
            node["format"] = fmt
    elif kind == "array":
        if "items" in node:
            out["items"] = anthropic_transform(node.pop("items"))
        min_items = node.pop("minItems", None)
        if min_items in (0, 1):
            out["minItems"] = min_items
        elif min_items is not None:
            node["minItems"] = min_items
    if node:  # unsupported keywords: tell the model in words
        extra = "{" + ", ".join(f"{k}: {v}" for k, v in node.items()) + "}"
        out["description"] = (out["description"] + "\n\n" if "description" in out else "") + extra
    return out


def _primitive(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# -- helpers --------------------------------------------------------------------------------

def _schema_name(name: str) -> str:
    """OpenAI wants ``^[a-zA-Z0-9_-]{1,64}$`` for the schema's name."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64]
    return cleaned or "Output"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _describe(exc: pydantic.ValidationError, text: str) -> str:
    """A short reason for a row's error column: what failed, and the start of the answer."""
    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "answer"
        problems.append(f"{where}: {err.get('msg')}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    shown = text if len(text) <= 80 else text[:77] + "..."
    message = f"answer does not fit the schema: {'; '.join(problems)}{more}; answer was {json.dumps(shown)}"
    return message[:MAX_ERROR_CHARS]
