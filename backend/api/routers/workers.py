"""Workers: which processes serve which queues, and whether they are alive."""

from __future__ import annotations

from fastapi import APIRouter, Request

from backend.api.deps import Conn, Reader
from backend.api.schemas import UNAUTHENTICATED, UNAVAILABLE, ok_response
from backend.control import workers

router = APIRouter(tags=["workers"])

WORKER = {
    "id": 42,
    "host": "app-1",
    "pid": 4711,
    "queues": None,
    "concurrency": 50,
    "started_at": "2030-01-01T08:00:00Z",
    "last_heartbeat": "2030-01-01T09:30:05Z",
    "stopped_at": None,
    "alive": True,
    "jobs_running": 12,
    "jobs_done": 18_204,
}
DEAD = {
    **WORKER,
    "id": 41,
    "pid": 4690,
    "queues": ["emails"],
    "last_heartbeat": "2030-01-01T07:59:40Z",
    "stopped_at": "2030-01-01T07:59:52Z",
    "alive": False,
    "jobs_running": 0,
}


@router.get(
    "/workers",
    response_model=list[workers.WorkerInfo],
    summary="List the workers",
    responses={
        200: ok_response("Live workers first, then dead ones.", workers=("Two", [WORKER, DEAD])),
        **UNAUTHENTICATED,
        **UNAVAILABLE,
    },
)
async def list_workers(request: Request, conn: Conn, caller: Reader) -> list[workers.WorkerInfo]:
    """Each worker process: host, pid, queues, concurrency, start, last heartbeat, jobs running
    now and jobs done. A worker that stopped, or sent no heartbeat for TASKHUB_RESCUE_AFTER
    seconds, is dead; dead workers are listed until pruning deletes them, 7 days on."""
    return await workers.list_workers(conn, request.app.state.settings.rescue_after)
