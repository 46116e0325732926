"""The checked-in OpenAPI document is the app's, and describes every operation well enough
for a generated client: an operationId, a summary, and its error answers as problems
(`application/problem+json`), with the limits every client can run into."""

from __future__ import annotations

import difflib
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.routing import APIRoute
from pydantic import SecretStr
from starlette.routing import BaseRoute

from app.api.limits import rate_limit
from app.api.problems import PROBLEM_MEDIA_TYPE
from app.config import Settings
from app.main import create_app

DOCUMENT = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"
PROBLEM_REF = "#/components/schemas/Problem"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
STALE = "openapi/openapi.json is not the app's document; run make openapi"


@pytest.fixture(scope="module")
def app_document() -> dict[str, Any]:
    settings = Settings(
        database_url="sqlite://", secret_keys=[SecretStr(Fernet.generate_key().decode())]
    )
    document: dict[str, Any] = json.loads(json.dumps(create_app(settings).openapi()))
    return document


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every operation of the document, keyed `METHOD /path`."""
    return {
        f"{method.upper()} {path}": operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def problem_statuses(operation: dict[str, Any]) -> set[str]:
    """The statuses whose documented body is a Problem sent as problem+json."""
    return {
        status
        for status, response in operation["responses"].items()
        if response.get("content", {}).get(PROBLEM_MEDIA_TYPE, {}).get("schema")
        == {"$ref": PROBLEM_REF}
    }


def sorted_json(document: dict[str, Any]) -> list[str]:
    return json.dumps(document, indent=2, sort_keys=True).splitlines()


def test_checked_in_document_is_the_apps(app_document: dict[str, Any]) -> None:
    checked_in = json.loads(DOCUMENT.read_text(encoding="utf-8"))

    if checked_in != app_document:
        diff = difflib.unified_diff(
            sorted_json(checked_in), sorted_json(app_document), "checked in", "app", lineterm=""
        )
        pytest.fail(f"{STALE}\n" + "\n".join(list(diff)[:60]))


def test_openapi_command_writes_the_checked_in_file_byte_for_byte(tmp_path: Path) -> None:
    output = tmp_path / "openapi.json"

    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "openapi", "--output", str(output)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert output.read_bytes() == DOCUMENT.read_bytes(), STALE
    assert list(tmp_path.iterdir()) == [output], "the command created files of its own"


def test_the_document_is_openapi_3_1(app_document: dict[str, Any]) -> None:
    assert app_document["openapi"].startswith("3.1.")


def pydantic_only_keywords(node: object, where: str = "") -> Iterator[str]:
    """Yield where a schema holds `ge`/`le`/`gt`/`lt`: pydantic's names, not JSON Schema's."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("ge", "le", "gt", "lt") and not isinstance(value, dict):
                yield f"{where}/{key}"
            yield from pydantic_only_keywords(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from pydantic_only_keywords(value, f"{where}/{index}")


def test_every_bound_is_in_json_schema_terms(app_document: dict[str, Any]) -> None:
    """A bound on an optional field must reach clients as minimum/maximum, which they check."""
    assert list(pydantic_only_keywords(app_document)) == []


def gaps(operation: dict[str, Any]) -> list[str]:
    """What a generated client would miss in this operation."""
    checks = {
        "operationId": "operationId" in operation,
        "summary": bool(operation.get("summary")),
        "a 4xx Problem response": any(s.startswith("4") for s in problem_statuses(operation)),
    }
    return [what for what, present in checks.items() if not present]


def test_every_operation_has_an_id_a_summary_and_a_problem_for_its_errors(
    app_document: dict[str, Any],
) -> None:
    lacking = [
        f"{name}: {', '.join(gaps(operation))}"
        for name, operation in operations(app_document).items()
        if gaps(operation)
    ]

    assert not lacking, "operations that lack\n" + "\n".join(lacking)


def test_every_v1_operation_documents_the_401_problem(app_document: dict[str, Any]) -> None:
    undocumented = [
        name
        for name, operation in operations(app_document).items()
        if name.split(" ")[1].startswith("/v1/") and "401" not in problem_statuses(operation)
    ]

    assert not undocumented, "no 401 Problem response on\n" + "\n".join(undocumented)


def test_operation_ids_are_unique(app_document: dict[str, Any]) -> None:
    ids = Counter(operation.get("operationId") for operation in operations(app_document).values())

    assert [operation_id for operation_id, count in ids.items() if count > 1] == []


def test_problems_are_documented_as_problem_json_only(app_document: dict[str, Any]) -> None:
    elsewhere = [
        f"{name} {status} as {media_type}"
        for name, operation in operations(app_document).items()
        for status, response in operation["responses"].items()
        for media_type, media in response.get("content", {}).items()
        if media.get("schema") == {"$ref": PROBLEM_REF} and media_type != PROBLEM_MEDIA_TYPE
    ]

    assert not elsewhere, "a Problem documented under another media type:\n" + "\n".join(elsewhere)


@pytest.mark.parametrize("status", ["400", "413"])
def test_every_operation_with_a_body_documents_the_400_and_413_problems(
    app_document: dict[str, Any], status: str
) -> None:
    """A body FastAPI cannot decode is a 400, one over API_MAX_BODY_BYTES a 413."""
    with_body = {
        name: operation
        for name, operation in operations(app_document).items()
        if "requestBody" in operation
    }

    assert len(with_body) > 10
    assert [name for name, op in with_body.items() if status not in problem_statuses(op)] == []


def test_every_cursor_parameter_states_its_format(app_document: dict[str, Any]) -> None:
    cursors = {
        name: parameter["schema"]["anyOf"][0]
        for name, operation in operations(app_document).items()
        for parameter in operation.get("parameters", [])
        if parameter["name"] == "cursor"
    }

    assert len(cursors) >= 5
    assert {name: schema.get("pattern") for name, schema in cursors.items()} == dict.fromkeys(
        cursors, "^[A-Za-z0-9_-]+$"
    )


@pytest.mark.parametrize(
    ("create", "parameter", "at_least"),
    [
        (
            "POST /v1/mailboxes",
            "mailbox_id",
            {
                "get_mailbox",
                "update_mailbox",
                "delete_mailbox",
                "list_folders",
                "update_folder_settings",
                "queue_sync",
                "list_sync_runs",
                "list_emails",
                "search_remote_folder",
            },
        ),
        (
            "POST /v1/webhooks",
            "webhook_id",
            {
                "get_webhook",
                "update_webhook",
                "delete_webhook",
                "list_webhook_deliveries",
                "test_webhook",
            },
        ),
    ],
)
def test_a_create_links_to_every_operation_on_what_it_created(
    app_document: dict[str, Any], create: str, parameter: str, at_least: set[str]
) -> None:
    """OpenAPI links let a client, and schemathesis' stateful phase, follow the new id."""
    documented = operations(app_document)
    collection = create.split(" ")[1]
    on_created = {
        operation["operationId"]
        for name, operation in documented.items()
        if name.split(" ")[1].startswith(f"{collection}/{{{parameter}}}")
    }
    links = documented[create]["responses"]["201"].get("links", {})

    assert {link["operationId"] for link in links.values()} == on_created
    assert at_least <= on_created
    for link in links.values():
        assert link["parameters"] == {parameter: "$response.body#/id"}, link


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every operation's route, also inside the routers the app includes."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        yield from api_routes(getattr(included, "routes", []))


def rate_limited_operation_ids() -> set[str]:
    """The operations whose route depends on `rate_limit`, as the app wires them."""
    settings = Settings(
        database_url="sqlite://", secret_keys=[SecretStr(Fernet.generate_key().decode())]
    )
    return {
        route.unique_id
        for route in api_routes(create_app(settings).routes)
        if any(dependency.call is rate_limit for dependency in route.dependant.dependencies)
    }


def test_rate_limited_operations_and_only_they_document_429_with_retry_after(
    app_document: dict[str, Any],
) -> None:
    documented = operations(app_document)
    with_429 = {name for name, operation in documented.items() if "429" in operation["responses"]}
    limited = {
        name
        for name, operation in documented.items()
        if operation["operationId"] in rate_limited_operation_ids()
    }

    assert len(limited) >= 14
    assert with_429 == limited | {"GET /v1/events"}  # too_many_streams
    for name in with_429:
        assert "429" in problem_statuses(documented[name]), name
        retry_after = documented[name]["responses"]["429"]["headers"]["Retry-After"]
        assert retry_after["schema"] == {"type": "integer"}, name


def test_every_v1_operation_documents_database_unavailable_with_retry_after(
    app_document: dict[str, Any],
) -> None:
    lacking = [
        name
        for name, operation in operations(app_document).items()
        if name.split(" ")[1].startswith("/v1/")
        and not (
            "`database_unavailable`" in operation["responses"].get("503", {}).get("description", "")
            and "Retry-After" in operation["responses"]["503"].get("headers", {})
        )
    ]

    assert not lacking, "no 503 `database_unavailable` on\n" + "\n".join(lacking)


def test_a_422_always_says_validation_error_besides_its_own_codes(
    app_document: dict[str, Any],
) -> None:
    lacking = [
        name
        for name, operation in operations(app_document).items()
        if "`validation_error`" not in operation["responses"]["422"]["description"]
    ]

    assert not lacking, "a 422 that forgets `validation_error` on\n" + "\n".join(lacking)


def test_the_oauth_callback_documents_its_400_page(app_document: dict[str, Any]) -> None:
    callback = operations(app_document)["GET /oauth/{provider}/callback"]

    assert callback["responses"]["400"]["content"] == {"text/html": {"schema": {"type": "string"}}}
    assert problem_statuses(callback) == {"422", "500", "503"}
