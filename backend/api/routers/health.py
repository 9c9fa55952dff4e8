"""Liveness and database status. Open to everyone: load balancers call it."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from backend.api.deps import Pool
from backend.api.schemas import Health, ok_response
from backend.errors import DatabaseUnavailable
from backend.queries import QUERIES

router = APIRouter(tags=["health"])

OK, UNREACHABLE, NOT_MIGRATED = Health.model_json_schema()["examples"]


@router.get(
    "/health",
    response_model=Health,
    summary="Check the API and its database",
    responses={
        200: ok_response("The database answers and is migrated.", ok=("Healthy", OK)),
        503: {
            "model": Health,
            **ok_response(
                "The database is unreachable, or not migrated.",
                unreachable=("Database down", UNREACHABLE),
                not_migrated=("Schema missing", NOT_MIGRATED),
            ),
        },
    },
)
async def health(pool: Pool, request: Request) -> JSONResponse:
    """200 when the database answers and is migrated, 503 otherwise. Needs no token."""
    timeout = min(2.0, request.app.state.settings.database_timeout)
    try:
        async with pool.connection(timeout=timeout) as conn:
            cursor = await conn.execute(QUERIES["check_database"])
            row = await cursor.fetchone()
    except (PoolTimeout, psycopg.OperationalError) as exc:
        body = Health(status="unavailable", database=f"unreachable: {type(exc).__name__}")
        return JSONResponse(body.model_dump(), status_code=503, headers=DatabaseUnavailable.headers)
    if row is None or not row["migrated"]:
        body = Health(status="unavailable", database="not migrated: run `taskhub migrate`")
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(status="ok", database="ok").model_dump())
