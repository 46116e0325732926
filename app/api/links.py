"""OpenAPI links (3.1, 4.8.20) from each create to the operations on what it created, so
clients and the stateful tests know what follows a create.

Derived from the document rather than declared per route: a POST answered 201 with an
`id` creates a resource; every operation under `<its path>/{x_id}` takes that id as
`x_id`. A route added under a resource is linked without further ado.
"""

from __future__ import annotations

import re
from typing import Any

from app.api.problems import HTTP_METHODS

_SCHEMA_PREFIX = "#/components/schemas/"


def link_created_resources(document: dict[str, Any]) -> dict[str, Any]:
    """Add to each create's 201 answer a link to every operation on the created id, in place."""
    paths: dict[str, dict[str, Any]] = document["paths"]
    for collection, path_item in paths.items():
        created = path_item.get("post", {}).get("responses", {}).get("201")
        if created is None or not _has_id(document, created):
            continue
        under = re.compile(re.escape(collection) + r"/\{(\w+)\}(/.*)?")
        links = {
            operation["operationId"]: {
                "operationId": operation["operationId"],
                "parameters": {match[1]: "$response.body#/id"},
            }
            for path, item in paths.items()
            if (match := under.fullmatch(path))
            for method, operation in item.items()
            if method in HTTP_METHODS
        }
        if links:
            created["links"] = links
    return document


def _has_id(document: dict[str, Any], response: dict[str, Any]) -> bool:
    """Whether a JSON answer is an object (a `$ref`'d schema) with an `id` property."""
    ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
    if not isinstance(ref, str) or not ref.startswith(_SCHEMA_PREFIX):
        return False
    schema = document["components"]["schemas"][ref.removeprefix(_SCHEMA_PREFIX)]
    return "id" in schema.get("properties", {})
