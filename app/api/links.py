"""OpenAPI links (3.1, 4.8.20) from an operation that creates a resource to the operations
that take its id, so clients and the stateful tests know what follows a create."""

from __future__ import annotations

from typing import Any


def follow_created(parameter: str, *operation_ids: str) -> dict[str, Any]:
    """A `responses=` entry linking a create's answer (`id`) to `parameter` of each operation."""
    return {
        "links": {
            operation_id: {
                "operationId": operation_id,
                "parameters": {parameter: "$response.body#/id"},
            }
            for operation_id in operation_ids
        }
    }
