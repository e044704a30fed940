"""JSON Schema of the story file, for editors (YAML language servers read `# yaml-language-server`)."""

from __future__ import annotations

from typing import Any

from storyboard.story.schema import Story


def story_json_schema() -> dict[str, Any]:
    schema = Story.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "storyboard story"
    # A character may also be the name of a file in characters/ (resolved by the loader).
    chars = schema["properties"]["characters"]
    ref = chars["additionalProperties"]
    chars["additionalProperties"] = {
        "anyOf": [ref, {"type": "string", "description": "Name of a characters/<name>.yaml file."}]
    }
    return schema
