"""Request and response bodies of the REST API, and the examples the OpenAPI document shows."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from backend import defer
from backend.control.tasks import TaskInfo

__all__ = [
    "DeferRequest",
    "ErrorBody",
    "FieldError",
    "Health",
    "TaskInfo",
]

#: The largest request body the API reads (POST /jobs): job arguments are ids, not documents.
MAX_BODY_BYTES = 1024 * 1024

PING_JOB = {
    "id": 42,
    "task": "taskhub.ping",
    "queue": "default",
    "priority": 0,
    "args": {"message": "hello", "sleep": 0.0},
    "lock": None,
    "queueing_lock": None,
    "status": "succeeded",
    "state": "SUCCESS",
    "attempts": 1,
    "scheduled_at": None,
    "created_at": "2030-01-01T08:00:00.000000Z",
    "started_at": "2030-01-01T08:00:00.120000Z",
    "finished_at": "2030-01-01T08:00:00.125000Z",
    "abort_requested": False,
    "worker_id": 3,
    "progress": None,
    "result": "hello",
    "last_error": None,
}
PING_JOB_EVENTS = [
    {"type": "deferred", "at": "2030-01-01T08:00:00.000000Z"},
    {"type": "started", "at": "2030-01-01T08:00:00.120000Z"},
    {"type": "succeeded", "at": "2030-01-01T08:00:00.125000Z"},
]
#: Example bodies of the job responses (JobView, JobSummary, JobPage).
JOB_EXAMPLES: dict[str, dict[str, Any]] = {
    "succeeded": {
        "summary": "A job that ran",
        "value": {**PING_JOB, "events": PING_JOB_EVENTS, "errors": []},
    },
    "pending": {
        "summary": "A job waiting for a worker",
        "value": {
            **PING_JOB,
            "status": "todo",
            "state": "PENDING",
            "attempts": 0,
            "started_at": None,
            "finished_at": None,
            "worker_id": None,
            "result": None,
            "events": PING_JOB_EVENTS[:1],
            "errors": [],
        },
    },
    "retrying": {
        "summary": "A job whose first attempt failed, waiting for its retry",
        "value": {
            **PING_JOB,
            "id": 43,
            "task": "crm.sync_customer",
            "queue": "sync",
            "args": {"customer_id": 7},
            "lock": "customer-7",
            "status": "todo",
            "state": "RETRY",
            "scheduled_at": "2030-01-01T08:01:00.000000Z",
            "finished_at": None,
            "worker_id": None,
            "progress": {
                "done": 1500,
                "total": 3000,
                "message": "Processing 1500/3000 assets",
                "counters": {"created": 12},
            },
            "result": None,
            "last_error": {
                "attempt": 1,
                "type": "ConnectionError",
                "message": "ERP answered 503",
                "at": "2030-01-01T08:00:30.000000Z",
            },
            "events": [
                {"type": "deferred", "at": "2030-01-01T08:00:00.000000Z"},
                {"type": "started", "at": "2030-01-01T08:00:00.120000Z"},
                {"type": "deferred_for_retry", "at": "2030-01-01T08:00:30.000000Z"},
            ],
            "errors": [
                {
                    "attempt": 1,
                    "type": "ConnectionError",
                    "message": "ERP answered 503",
                    "traceback": 'Traceback (most recent call last):\n  File "crm.py", line 12',
                    "at": "2030-01-01T08:00:30.000000Z",
                }
            ],
        },
    },
}
JOB_PAGE_EXAMPLES: dict[str, dict[str, Any]] = {
    "page": {
        "summary": "A page with more after it",
        "value": {"items": [PING_JOB], "next_cursor": "aWQ6NDI"},
    },
    "last": {"summary": "The last page", "value": {"items": [], "next_cursor": None}},
}


#: A time filter: any ISO 8601 time, compared in UTC.
UtcTime = Annotated[datetime.datetime | None, AfterValidator(defer.in_utc)]


def _defer_request_schema(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    field_examples: dict[str, list[Any]] = {
        "task": ["taskhub.ping"],
        "args": [{"message": "hello"}, {}],
        "queue": ["default", "payment.critical"],
        "priority": [0, 100],
        "schedule_in": [3600],
        "schedule_at": ["2030-01-01T08:00:00Z"],
        "queueing_lock": ["ping-customer-7"],
        "lock": ["customer-7"],
    }
    for name, examples in field_examples.items():
        properties[name]["examples"] = examples
    # What the "not both" validator of the model checks, for generators and clients to see.
    schema["not"] = {
        "description": "schedule_in and schedule_at exclude each other.",
        "required": ["schedule_in", "schedule_at"],
        "properties": {"schedule_in": {"type": "number"}, "schedule_at": {"type": "string"}},
    }
    schema["examples"] = [
        {"task": "taskhub.ping", "args": {"message": "hello"}},
        {
            "task": "taskhub.ping",
            "args": {"message": {"order": 42}},
            "queue": "payment.critical",
            "priority": 100,
            "schedule_at": "2030-01-01T08:00:00Z",
            "lock": "customer-7",
            "queueing_lock": "ping-customer-7",
        },
    ]


class DeferRequest(defer.DeferRequest):
    """A job to enqueue. Options left out take the task's defaults.

    What PostgreSQL cannot store is a 422 naming the field: NUL, NaN or Infinity and lone
    surrogates in `args`, `args` nested deeper than 64 levels, control characters in locks,
    `schedule_at` outside 0001-01-02..9999-12-30 (UTC).
    """

    # The rules live in backend.defer.DeferRequest (shared with the CLI); this adds examples.

    model_config = ConfigDict(json_schema_extra=_defer_request_schema)


#: Named request bodies for POST /jobs (Swagger UI's example picker).
DEFER_EXAMPLES: dict[str, dict[str, Any]] = {
    "minimal": {
        "summary": "A task and its arguments",
        "value": {"task": "taskhub.ping", "args": {"message": "hello"}},
    },
    "delayed": {
        "summary": "Run in an hour, on another queue",
        "value": {
            "task": "taskhub.ping",
            "args": {"message": "later"},
            "queue": "payment.critical",
            "priority": 100,
            "schedule_in": 3600,
        },
    },
    "scheduled": {
        "summary": "At a given time, one at a time per customer",
        "value": {
            "task": "taskhub.ping",
            "args": {"message": {"order": 42}},
            "schedule_at": "2030-01-01T08:00:00Z",
            "lock": "customer-7",
            "queueing_lock": "ping-customer-7",
        },
    },
}


class Health(BaseModel):
    """Whether the API can serve: its database answers and is migrated."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"status": "ok", "database": "ok"},
                {"status": "unavailable", "database": "unreachable: PoolTimeout"},
                {"status": "unavailable", "database": "not migrated: run `taskhub migrate`"},
            ]
        }
    )

    status: str = Field(description="`ok` or `unavailable`.", examples=["ok"])
    database: str = Field(description="`ok`, or what is wrong with it.", examples=["ok"])


class FieldError(BaseModel):
    """One invalid field: where it is, and what is wrong with it."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "greater_than_equal",
                    "loc": ["body", "args", "sleep"],
                    "msg": "Input should be greater than or equal to 0",
                    "input": -1,
                    "ctx": {"ge": 0},
                }
            ]
        },
    )

    loc: list[str | int] = Field(
        description="Path to the field: body, query, path or header first.",
        examples=[["body", "args", "sleep"], ["query", "limit"]],
    )
    msg: str = Field(examples=["Input should be greater than or equal to 0"])
    type: str = Field(examples=["greater_than_equal"])


class ErrorBody(BaseModel):
    """Every error answer: a message, or a list of invalid fields (422)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"detail": "job 999 not found"},
                {
                    "detail": [
                        {
                            "type": "greater_than_equal",
                            "loc": ["body", "args", "sleep"],
                            "msg": "Input should be greater than or equal to 0",
                        }
                    ]
                },
            ]
        }
    )

    detail: str | list[FieldError] = Field(
        description="What went wrong: a sentence, or (422) one entry per invalid field."
    )


def _example_job(**changes: Any) -> dict[str, Any]:
    return {**JOB_EXAMPLES["pending"]["value"], **changes}


CANCELLED_JOB = _example_job(
    status="cancelled",
    state="REVOKED",
    finished_at="2030-01-01T08:00:05.000000Z",
    events=[*PING_JOB_EVENTS[:1], {"type": "cancelled", "at": "2030-01-01T08:00:05.000000Z"}],
)
ABORTING_JOB = _example_job(
    status="doing",
    state="STARTED",
    started_at="2030-01-01T08:00:00.120000Z",
    worker_id=3,
    abort_requested=True,
    events=PING_JOB_EVENTS[:2],
)
RETRIED_JOB = _example_job(
    status="todo",
    state="RETRY",
    attempts=1,
    started_at="2030-01-01T08:00:00.120000Z",
    last_error=JOB_EXAMPLES["retrying"]["value"]["last_error"],
    errors=JOB_EXAMPLES["retrying"]["value"]["errors"],
    events=[
        *PING_JOB_EVENTS[:2],
        {"type": "failed", "at": "2030-01-01T08:00:30.000000Z"},
        {"type": "retried", "at": "2030-01-01T09:00:00.000000Z"},
    ],
)


def parameter_examples(**values: tuple[str, Any]) -> dict[str, dict[str, Any]]:
    """``openapi_examples`` of a parameter: name -> (summary, value)."""
    return {name: {"summary": summary, "value": value} for name, (summary, value) in values.items()}


def ok_response(description: str, **examples: tuple[str, Any]) -> dict[str, Any]:
    """A success answer for ``responses=``: named examples of the response model's body."""
    return {
        "description": description,
        "content": {
            "application/json": {
                "examples": {
                    name: {"summary": summary, "value": value}
                    for name, (summary, value) in examples.items()
                }
            }
        },
    }


def error_response(description: str, **examples: tuple[str, Any]) -> dict[str, Any]:
    """An error answer for ``responses=``: the ErrorBody model, with named example details."""
    return {
        "model": ErrorBody,
        **ok_response(
            description,
            **{name: (summary, {"detail": detail}) for name, (summary, detail) in examples.items()},
        ),
    }


Responses = dict[int | str, dict[str, Any]]

UNAUTHENTICATED: Responses = {
    401: error_response(
        "No valid API token: send `Authorization: Bearer <token>`.",
        missing=(
            "No token, or an unknown one",
            "a valid API token is required: Authorization: Bearer <token>",
        ),
    ),
    429: {
        **error_response(
            "Too many invalid tokens from this address within 5 minutes (10): every token it"
            " sends is refused until `Retry-After` seconds have passed.",
            throttled=(
                "Guessing tokens",
                "too many invalid API tokens from 203.0.113.7: try again in 287 s",
            ),
        ),
        "headers": {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}
        },
    },
}
FORBIDDEN: Responses = {
    403: error_response(
        "The token is valid, but its scope is below operate.",
        read_only=("A read token", "this needs the operate scope; the token has read"),
    )
}
UNAVAILABLE: Responses = {
    503: error_response(
        "The database is unreachable (no connection within TASKHUB_DATABASE_TIMEOUT).",
        unreachable=("Database down", "the database is unreachable; try again shortly"),
    )
}
JOB_NOT_FOUND: Responses = {
    404: error_response(
        "No job has this id (it never existed, or it was pruned).",
        not_found=("Unknown id", "job 999 not found"),
    )
}


def invalid(description: str, *errors: tuple[str, Sequence[str | int], str, str]) -> Responses:
    """A 422 whose examples are (summary, loc, msg, type) of one invalid field each."""
    return {
        422: error_response(
            description,
            **{
                f"example{number}": (summary, [{"loc": list(loc), "msg": msg, "type": kind}])
                for number, (summary, loc, msg, kind) in enumerate(errors, start=1)
            },
        )
    }


INVALID_JOB_ID = (
    "Job id out of range",
    ["path", "job_id"],
    "Input should be greater than or equal to 1",
    "greater_than_equal",
)
