"""The registered tasks, with their policy and argument schema."""

from __future__ import annotations

from fastapi import APIRouter, Request

from backend.api.deps import Apps, Reader
from backend.api.schemas import UNAUTHENTICATED, TaskInfo, ok_response

router = APIRouter(tags=["tasks"])

PING = TaskInfo.model_json_schema()["examples"][0]


@router.get(
    "/tasks",
    response_model=list[TaskInfo],
    summary="List the tasks",
    responses={
        200: ok_response("Every registered task, by name.", builtin=("The built-in task", [PING])),
        **UNAUTHENTICATED,
    },
)
async def list_tasks(caller: Reader, request: Request, apps: Apps) -> list[TaskInfo]:
    """Every task a job can be deferred for, with its default queue, priority, locks and retry
    policy, and the JSON schema `args` must match in `POST /jobs`. Queue, retry and limits
    are the effective ones: the task's own, else its app's defaults (or the operator's)."""
    overrides = request.app.state.settings.rate_limit_overrides()
    return [
        TaskInfo.of(task, overrides)
        for task in sorted(apps.tasks.values(), key=lambda task: task.name)
    ]
