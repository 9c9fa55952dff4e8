"""Error responses: one JSON shape for taskhub's errors and for invalid requests."""

from __future__ import annotations

import math
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from backend.errors import DatabaseUnavailable, InvalidJobArguments, TaskhubError

#: How much of an invalid input a 422 echoes back.
ECHO_CHARS = 200
ECHO_DEPTH = 8
ECHO_ITEMS = 20


def _json_safe(value: Any, *, echo: bool = False, depth: int = 0) -> Any:
    """``value`` as JSON can carry it: no NaN, no lone surrogates; if ``echo``, also short.

    Validation errors echo the rejected input, which may be anything the JSON parser accepts
    (NaN, "\\ud800", a 900-deep list, a megabyte string): rendering it must not fail.
    """
    if isinstance(value, str):
        if echo and len(value) > ECHO_CHARS:
            value = value[:ECHO_CHARS] + "..."
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, BaseException):
        return _json_safe(str(value), echo=echo, depth=depth)
    if echo and depth >= ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        items = list(value.items())
        return {
            str(_json_safe(key, echo=echo)): _json_safe(item, echo=echo, depth=depth + 1)
            for key, item in (items[:ECHO_ITEMS] if echo else items)
        }
    if isinstance(value, list | tuple):
        return [
            _json_safe(item, echo=echo, depth=depth + 1)
            for item in (value[:ECHO_ITEMS] if echo else value)
        ]
    try:
        encoded = jsonable_encoder(value)
    except (TypeError, ValueError):
        encoded = str(value)
    return _json_safe(encoded, echo=echo, depth=depth + 1)


def _safe_errors(errors: Any) -> list[dict[str, Any]]:
    """Validation errors for a 422: the rejected ``input`` cut short, the rest as it is."""
    return [
        {key: _json_safe(value, echo=key == "input") for key, value in error.items()}
        for error in errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer, minus what JSON cannot carry in the echoed input.
        return JSONResponse({"detail": _safe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(psycopg.OperationalError)
    async def connection_lost(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        # The server went away during the request (a restart, a failover). A broken
        # connection leaves the pool; the request can be sent again.
        return JSONResponse(
            {"detail": "the database connection was lost; try again shortly"},
            status_code=503,
            headers=DatabaseUnavailable.headers,
        )

    @app.exception_handler(psycopg.errors.ReadOnlySqlTransaction)
    async def read_only(
        request: Request, exc: psycopg.errors.ReadOnlySqlTransaction
    ) -> JSONResponse:
        # A failover in progress: the address still leads to a standby (or a server set
        # read-only). Reads go on; a write can be sent again once a primary answers.
        return JSONResponse(
            {"detail": "the database is read-only for now (a failover?); try again shortly"},
            status_code=503,
            headers=DatabaseUnavailable.headers,
        )

    @app.exception_handler(TaskhubError)
    async def taskhub_error(request: Request, exc: TaskhubError) -> JSONResponse:
        if isinstance(exc, InvalidJobArguments):
            # The same shape as FastAPI's own 422, with the field at fault under "body".
            detail = [{**error, "loc": ["body", *error["loc"]]} for error in exc.errors]
            return JSONResponse({"detail": _safe_errors(detail)}, status_code=exc.status_code)
        return JSONResponse(
            {"detail": _json_safe(exc.message)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
