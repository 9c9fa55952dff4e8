"""The registered tasks, with their policy and argument schema."""

from __future__ import annotations

from fastapi import APIRouter

from backend.api.deps import Reader
from backend.api.routers.jobs import AUTH
from backend.api.schemas import TaskInfo
from backend.tasks import all_tasks

router = APIRouter(tags=["tasks"])


@router.get("/tasks", response_model=list[TaskInfo], responses=AUTH)
async def list_tasks(caller: Reader) -> list[TaskInfo]:
    """Every task a job can be deferred for."""
    return [
        TaskInfo(
            name=task.name,
            description=task.description,
            queue=task.queue,
            priority=task.priority,
            lock=task.lock,
            queueing_lock=task.queueing_lock,
            retry=task.describe_retry(),
            args_schema=task.args_model.model_json_schema(),
        )
        for task in sorted(all_tasks().values(), key=lambda task: task.name)
    ]
