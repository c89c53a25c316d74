"""JSON Schemas of the agent's replies: one place for the prompts' examples, for
schema-constrained decoding (an OpenAI-compatible server's ``response_format``) and for
the shapes the agent accepts when it reads a reply.

* plan: per option letter, search queries ``for`` the option (1-2) and ``against`` it (0-1);
* reading: the ids of the passages shown that ``supporting`` / ``contradicting`` the
  option (only those ids are allowed), and up to two ``refine`` queries.

The schemas use only what structured-output engines support widely (objects with every
property required and no others, arrays with bounds, strings, enums).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

#: the decoding modes an agent reply can come from
JSON_SCHEMA = "json_schema"  # the server constrained the reply to the schema
PROMPTED = "prompted"  # the schema's example was in the prompt; the reply is free text
DECODING_MODES = (JSON_SCHEMA, PROMPTED)

#: the string the prompts' examples show; a reply that copies it has not written a query
PLACEHOLDER = "query"
#: per option: queries for it (at least one) and against it
MAX_FOR, MAX_AGAINST = 2, 1
MAX_REFINE = 2


def _queries(least: int, most: int) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "minItems": least, "maxItems": most}


def plan_schema(letters: Sequence[str]) -> dict[str, Any]:
    """The planner's reply for an item with option ``letters``."""
    per_option = {
        "type": "object",
        "properties": {"for": _queries(1, MAX_FOR), "against": _queries(0, MAX_AGAINST)},
        "required": ["for", "against"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {letter: per_option for letter in letters},
        "required": list(letters),
        "additionalProperties": False,
    }


def reading_schema(passage_ids: Sequence[str]) -> dict[str, Any]:
    """The reader's reply about the passages ``passage_ids`` for one option."""
    ids = {"type": "array", "items": {"type": "string", "enum": list(passage_ids)}, "maxItems": len(passage_ids)}
    return {
        "type": "object",
        "properties": {"supporting": ids, "contradicting": ids, "refine": _queries(0, MAX_REFINE)},
        "required": ["supporting", "contradicting", "refine"],
        "additionalProperties": False,
    }


def example(schema: dict[str, Any]) -> str:
    """A short JSON instance of ``schema`` for a prompt (strings become :data:`PLACEHOLDER`, enums
    their first value, arrays as many items as they need at least, or one)."""

    def instance(node: dict[str, Any]) -> Any:
        if node.get("type") == "object":
            return {key: instance(value) for key, value in node["properties"].items()}
        if node.get("type") == "array":
            return [instance(node["items"]) for _ in range(max(1, node.get("minItems", 0)))]
        if "enum" in node:
            return node["enum"][0]
        return PLACEHOLDER

    return json.dumps(instance(schema))


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The ``response_format`` field of an OpenAI-compatible chat request."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
