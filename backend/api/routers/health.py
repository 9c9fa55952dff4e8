"""Liveness and database status. Open to everyone: load balancers call it."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from backend.api.deps import Pool
from backend.api.schemas import Health
from backend.queries import QUERIES

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database is unreachable."}},
)
async def health(pool: Pool, request: Request) -> JSONResponse:
    """200 when the database answers and is migrated, 503 otherwise."""
    timeout = min(2.0, request.app.state.settings.database_timeout)
    try:
        async with pool.connection(timeout=timeout) as conn:
            cursor = await conn.execute(QUERIES["check_database"])
            row = await cursor.fetchone()
    except (PoolTimeout, psycopg.OperationalError) as exc:
        body = Health(status="unavailable", database=f"unreachable: {type(exc).__name__}")
        return JSONResponse(body.model_dump(), status_code=503)
    if row is None or not row["migrated"]:
        body = Health(status="unavailable", database="not migrated: run `taskhub migrate`")
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(status="ok", database="ok").model_dump())
