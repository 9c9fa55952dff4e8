"""The OpenAPI document, and schemathesis fuzzing the live API on a real database.

Every operation of the published document gets its own app on a fresh migrated database,
seeded with jobs in each state, and schemathesis' examples, coverage and fuzzing phases. A
5xx, an undeclared status code, a content type or a body the document does not announce
fails the test.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import jsonschema_rs
import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from psycopg.types.json import Jsonb
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend import defer
from backend.api import create_app
from backend.control.waiting import MAX_WAIT
from backend.db import DictConnection
from backend.settings import Settings, load_settings
from backend.tasks.builtin import ping
from tests.conftest import ADMIN_TOKEN, TOKENS, bearer, count_jobs

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Each operation runs its three phases in a second or two (this module: ~15 s in all).
MAX_EXAMPLES = 50
# Long polls end at once when the job finishes, else after `wait` seconds: keep them short.
SHORTEST_WAIT = 0.1

# The document, for collection; the tests run against apps on their own databases.
DOCUMENT = create_app(
    load_settings(database_url="postgresql://offline@127.0.0.1/offline", tokens=TOKENS)
).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.hook("flatmap_body")
def _registered_task(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """POST /jobs: a random task name is only a 404; also send the body for a real task."""
    if context.operation is None or context.operation.label != "POST /jobs":
        return st.just(body)
    if not isinstance(body, dict):
        return st.just(body)
    return st.sampled_from(
        [
            body,
            {**body, "task": ping.name, "args": {}},
            {**body, "task": ping.name, "args": {"message": body.get("args")}},
        ]
    )


def seed_jobs(db_url: str) -> None:
    """One job in each state, with progress, a result and errors, for the responses to show."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Waiting, scheduled, running, succeeded, failed and cancelled, in that order.
        options: list[dict[str, Any]] = [
            {},
            {"schedule_in": 3600, "lock": "l"},
            {},
            {"queueing_lock": "q"},
            {},
            {},
        ]
        _, _, running, succeeded, failed, cancelled = (
            defer.defer_sync(conn, ping, {"message": n}, **option)
            for n, option in enumerate(options)
        )
        for job_id in (running, succeeded, failed):
            conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,))
        for job_id, status in ((succeeded, "succeeded"), (failed, "failed")):
            conn.execute(
                "SELECT procrastinate_finish_job_v1(%s, %s::procrastinate_job_status, false)",
                (job_id, status),
            )
        conn.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", (cancelled,))
        conn.execute(
            "INSERT INTO taskhub.job_progress (job_id, done, total, message, counters)"
            " VALUES (%s, %s, NULL, 'ünïcode ✓', %s), (%s, 0, 10, NULL, '{}')",
            (running, 2**63 - 1, Jsonb({"created": 12, "skipped": -1}), succeeded),
        )
        conn.execute(
            "INSERT INTO taskhub.job_results (job_id, result) VALUES (%s, %s)",
            (succeeded, Jsonb({"nested": [1, 2.5, None, True, "✓", {"big": 10**30}]})),
        )
        conn.execute(
            "INSERT INTO taskhub.job_errors (job_id, attempt, type, message, traceback)"
            " VALUES (%s, 1, 'ConnectionError', 'ERP answered 503', NULL),"
            " (%s, 2, 'ValueError', '', 'Traceback (most recent call last):')",
            (failed, failed),
        )


@pytest.fixture
def live_app(settings: Settings, db_url: str) -> Iterator[FastAPI]:
    """The app on this test's seeded database; schemathesis runs its lifespan until the end."""
    seed_jobs(db_url)
    yield create_app(settings, db_url)
    asgi.shutdown_lifespans()


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        hypothesis.HealthCheck.function_scoped_fixture,
        hypothesis.HealthCheck.too_slow,
        hypothesis.HealthCheck.filter_too_much,
    ],
)
def test_api_conforms_to_its_schema(case: schemathesis.Case[Any], live_app: FastAPI) -> None:
    wait = case.query.get("wait") if case.query else None
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= MAX_WAIT:
        case.query["wait"] = min(wait, SHORTEST_WAIT)
    case.call_and_validate(app=live_app, headers=bearer(ADMIN_TOKEN), checks=CHECKS)


# -- The document itself --------------------------------------------------------------------

OPERATIONS = [
    (path, method, operation)
    for path, methods in DOCUMENT["paths"].items()
    for method, operation in methods.items()
]
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def validator(subschema: dict[str, Any]) -> jsonschema_rs.Validator:
    """A validator for a schema of the document, its references resolved in the document."""
    return jsonschema_rs.validator_for({"allOf": [subschema], "components": DOCUMENT["components"]})


def assert_valid(subschema: dict[str, Any], instance: Any, where: str) -> None:
    errors = [error.message for error in validator(subschema).iter_errors(instance)]
    assert not errors, f"{where}: {errors}"


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    assert DOCUMENT["info"]["description"]
    assert {tag["name"] for tag in DOCUMENT["tags"]} == {
        "jobs",
        "tasks",
        "queues",
        "schedules",
        "backups",
        "workers",
        "alerts",
        "stats",
        "health",
    }, "the examples' routes appear only where their apps are enabled"


async def test_the_live_app_serves_the_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == json.loads(json.dumps(DOCUMENT))


def test_bearer_security_scheme() -> None:
    scheme = DOCUMENT["components"]["securitySchemes"]["HTTPBearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "TASKHUB_TOKENS" in scheme["description"]
    secured = {f"{method} {path}" for path, method, op in OPERATIONS if "security" in op}
    assert secured == {f"{method} {path}" for path, method, _ in OPERATIONS} - {"get /health"}


@pytest.mark.parametrize(
    ("path", "method", "operation"),
    OPERATIONS,
    ids=[f"{method.upper()} {path}" for path, method, _ in OPERATIONS],
)
def test_operation_is_documented(path: str, method: str, operation: dict[str, Any]) -> None:
    assert operation["summary"]
    assert operation["description"]
    for parameter in operation.get("parameters", []):
        assert parameter["description"], parameter["name"]
        assert parameter["examples"], parameter["name"]
        for name, example in parameter["examples"].items():
            where = f"{parameter['name']} example {name}"
            assert_valid(parameter["schema"], example["value"], where)
    if "requestBody" in operation:
        content = operation["requestBody"]["content"]["application/json"]
        assert content["examples"]
        for name, example in content["examples"].items():
            assert_valid(content["schema"], example["value"], f"request body example {name}")
    responses = operation["responses"]
    if "security" in operation:
        assert "401" in responses
        if method == "post":  # enqueueing and control need the operate scope
            assert "403" in responses
    if operation.get("parameters") or "requestBody" in operation:
        assert "422" in responses
    for code, response in responses.items():
        assert response["description"], code
        content = response["content"]["application/json"]
        if code.startswith(("4", "5")) and path != "/health":
            assert content["schema"] == ERROR_BODY, code
        assert content["examples"], code
        for name, example in content["examples"].items():
            assert_valid(content["schema"], example["value"], f"{code} example {name}")


def test_model_examples_match_their_schema() -> None:
    for name, component in DOCUMENT["components"]["schemas"].items():
        for example in component.get("examples", []):
            assert_valid(component, example, f"{name} example")
        for field, prop in component.get("properties", {}).items():
            for example in prop.get("examples", []):
                assert_valid(prop, example, f"{name}.{field} example")
    for name in ("DeferRequest", "ErrorBody", "FieldError", "Health", "TaskInfo"):
        assert DOCUMENT["components"]["schemas"][name]["examples"], name


async def test_request_examples_are_accepted(client: httpx.AsyncClient) -> None:
    operation = DOCUMENT["paths"]["/jobs"]["post"]
    for name, example in operation["requestBody"]["content"]["application/json"][
        "examples"
    ].items():
        response = await client.post("/jobs", json=example["value"])
        assert response.status_code == 201, (name, response.text)
    queries = {
        parameter["name"]: example["value"]
        for parameter in DOCUMENT["paths"]["/jobs"]["get"]["parameters"]
        for example in parameter["examples"].values()
    }
    response = await client.get("/jobs", params=queries)
    assert response.status_code == 200, response.text


# -- What schemathesis found, or could have: clear 4xx, never a 5xx -------------------------


def declared(path: str, method: str, status: int) -> bool:
    return str(status) in DOCUMENT["paths"][path][method]["responses"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"task": "a\x00b"}, "task"),
        ({"queue": "\x00"}, "queue"),
        # Year 0 once in UTC: beyond Python's datetime.
        ({"created_after": "0001-01-01T00:00:00+05:00"}, "created_after"),
        ({"finished_before": "9999-12-31T23:00:00-05:00"}, "finished_before"),
    ],
)
async def test_filters_the_database_rejects_are_422(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await client.get("/jobs", params=params)
    assert response.status_code == 422, response.text
    assert ["query", field] in [error["loc"] for error in response.json()["detail"]]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        # PostgreSQL stores them, psycopg cannot read them back (years 0 and 10000 in UTC).
        (b'{"task": "taskhub.ping", "schedule_at": "0001-01-01T00:00:00+05:00"}', "schedule_at"),
        (b'{"task": "taskhub.ping", "schedule_at": "9999-12-31T23:00:00-05:00"}', "schedule_at"),
        # Not UTF-8 once encoded: PostgreSQL refuses them.
        (b'{"task": "taskhub.ping", "args": {"message": "\\ud800"}}', "args"),
        (b'{"task": "taskhub.ping", "args": {"message": {"\\udfff": 1}}}', "args"),
        # Not JSON: stored as null before, or refused by jsonb.
        (b'{"task": "taskhub.ping", "args": {"message": NaN}}', "args"),
        (b'{"task": "taskhub.ping", "args": {"message": [1e400]}}', "args"),
        # Deep enough to exhaust Python's recursion limit while checked for NUL.
        (
            b'{"task": "taskhub.ping", "args": {"message": ' + b"[" * 900 + b"]" * 900 + b"}}",
            "args",
        ),
        # The 422 echoes the input: it must render NaN and lone surrogates.
        (b'{"task": "\\ud800"}', "task"),
        (b'{"task": "taskhub.ping", "lock": "\\ud800"}', "lock"),
        (b'{"task": "taskhub.ping", "schedule_in": NaN}', "schedule_in"),
        (b'{"task": "taskhub.ping", "priority": -Infinity}', "priority"),
    ],
)
async def test_values_the_database_rejects_are_422(
    client: httpx.AsyncClient, conn: DictConnection, raw: bytes, field: str
) -> None:
    response = await client.post("/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert ["body", field] in [error["loc"] for error in response.json()["detail"]]
    assert_valid(ERROR_BODY, response.json(), "the 422 body")
    assert await count_jobs(conn) == 0


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"task": "taskhub.ping", "args": {"message": "\xff"}}', 400),  # not UTF-8
        (b'{"task": "taskhub.ping", "args": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
        (b'{"task": "taskhub.ping", "args": {"message": "' + b"x" * 2**20 + b'"}}', 413),
    ],
    ids=["not-utf8", "too-deep-for-json", "too-large"],
)
async def test_unreadable_bodies_get_a_declared_error(
    client: httpx.AsyncClient, conn: DictConnection, raw: bytes, status: int
) -> None:
    response = await client.post("/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert declared("/jobs", "post", status)
    assert_valid(ERROR_BODY, response.json(), f"the {status} body")
    assert await count_jobs(conn) == 0


async def test_schedule_at_within_range_is_accepted(client: httpx.AsyncClient) -> None:
    for at in ("0001-01-02T00:00:00Z", "9999-12-29T12:00:00+05:00"):
        response = await client.post("/jobs", json={"task": "taskhub.ping", "schedule_at": at})
        assert response.status_code == 201, response.text


async def test_utc_offsets_postgresql_refuses_are_converted(client: httpx.AsyncClient) -> None:
    # ISO 8601 and Python allow offsets up to ±23:59, PostgreSQL only up to ±15:59.
    at = "2030-01-01T00:00:00+16:00"
    response = await client.post("/jobs", json={"task": "taskhub.ping", "schedule_at": at})
    assert response.status_code == 201, response.text
    scheduled = datetime.datetime.fromisoformat(response.json()["scheduled_at"])
    assert scheduled == datetime.datetime(2029, 12, 31, 8, tzinfo=datetime.UTC)
    listed = await client.get("/jobs", params={"created_after": at, "finished_before": at})
    assert listed.status_code == 200, listed.text


async def test_a_taken_queueing_lock_with_a_line_break_is_422(client: httpx.AsyncClient) -> None:
    # procrastinate parses the taken lock out of PostgreSQL's message, up to a line break.
    body = {"task": "taskhub.ping", "queueing_lock": "a\nb"}
    response = await client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    assert ["body", "queueing_lock"] in [error["loc"] for error in response.json()["detail"]]
