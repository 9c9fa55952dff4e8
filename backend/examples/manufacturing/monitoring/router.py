"""``/monitoring/*``: the seed's monitoring endpoints, answered from taskhub's own read model
(queues, workers, the statistics rollup, alerts, jobs) rather than from Celery's inspect and a
result backend. Reading needs a read token; scheduling and control need operate."""

from __future__ import annotations

import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, Field, field_validator, model_validator

from backend import defer
from backend.api.deps import Apps, Conn, Operator, Reader
from backend.control import alert_rules, jobs, queues, stats, workers
from backend.control.alert_rules import AlertState
from backend.defer import QUEUE_PATTERN
from backend.examples.manufacturing.monitoring.tasks import QUERIES as MONITORING_QUERIES
from backend.examples.manufacturing.queues import POOLS, QUEUES
from backend.queries import QUERIES

router = APIRouter(prefix="/monitoring", tags=["manufacturing"])

TIERS = {queue: tier for tier, (names, _) in POOLS.items() for queue in names}


class Health(BaseModel):
    status: Literal["healthy", "degraded"] = Field(
        description="degraded: no live worker, or an error or critical alert firing"
    )
    database: Literal["ok"] = "ok"
    workers_alive: int
    alerts_firing: list[AlertState]
    checked_at: datetime.datetime


@router.get("/health", response_model=Health, summary="System health")
async def health(request: Request, conn: Conn, caller: Reader) -> Health:
    """The database answers (else 503), live workers, and the alerts firing now."""
    figures = await _overview(conn, request)
    firing = await alert_rules.firing_alerts(conn)
    serious = [alert for alert in firing if alert.severity in ("error", "critical")]
    healthy = figures["workers_alive"] > 0 and not serious
    return Health(
        status="healthy" if healthy else "degraded",
        workers_alive=figures["workers_alive"],
        alerts_firing=firing,
        checked_at=datetime.datetime.now(datetime.UTC),
    )


async def _overview(conn: Conn, request: Request) -> dict[str, Any]:
    alive = request.app.state.settings.rescue_after
    cursor = await conn.execute(QUERIES["metrics_overview"], {"alive_seconds": alive})
    row = await cursor.fetchone()
    assert row is not None
    return dict(row)


class ServiceStatus(BaseModel):
    service: str = Field(examples=["payment_provider"])
    ok: bool
    latency_ms: float | None
    error: str | None
    details: dict[str, Any]
    checked_at: datetime.datetime


@router.get("/services", response_model=list[ServiceStatus], summary="External services")
async def services(conn: Conn, caller: Reader) -> list[ServiceStatus]:
    """The latest check of each service and resource by manufacturing.health_check (every 2
    minutes): the database, the mail server, the payment provider, disk, load, memory."""
    cursor = await conn.execute(MONITORING_QUERIES["health_latest"])
    return [ServiceStatus.model_validate(row) for row in await cursor.fetchall()]


class QueueStatus(BaseModel):
    name: str
    priority: int | None = Field(description="The seed's priority; null for another queue")
    tier: str | None = Field(description="critical, high, normal or low (its worker pool)")
    waiting: int
    running: int
    oldest_waiting_at: datetime.datetime | None
    paused: bool


@router.get("/queues", response_model=list[QueueStatus], summary="Queue status")
async def queue_status(conn: Conn, caller: Reader) -> list[QueueStatus]:
    """The seed's fifteen queues, busiest tier first, even when empty, then any other queue
    with jobs; figures read on the active jobs only."""
    found = {queue.name: queue for queue in await queues.list_queues(conn)}
    names = sorted(QUEUES, key=lambda name: (-QUEUES[name], name))
    names += sorted(name for name in found if name not in QUEUES)
    answer = []
    for name in names:
        queue = found.get(name)
        answer.append(
            QueueStatus(
                name=name,
                priority=QUEUES.get(name),
                tier=TIERS.get(name),
                waiting=queue.todo if queue else 0,
                running=queue.doing if queue else 0,
                oldest_waiting_at=queue.oldest_todo_at if queue else None,
                paused=queue.paused if queue else False,
            )
        )
    return answer


@router.get("/workers", response_model=list[workers.WorkerInfo], summary="Worker status")
async def worker_status(request: Request, conn: Conn, caller: Reader) -> list[workers.WorkerInfo]:
    """Every worker process, live ones first (as `taskhub workers`)."""
    return await workers.list_workers(conn, request.app.state.settings.rescue_after)


class Realtime(BaseModel):
    waiting: int
    running: int
    workers_alive: int
    alerts_firing: int
    last_5_minutes: dict[str, int] = Field(
        description="Attempts that ended in the last five rolled-up minutes, by outcome"
    )
    at: datetime.datetime


@router.get("/metrics/realtime", response_model=Realtime, summary="Real-time metrics")
async def realtime(request: Request, conn: Conn, caller: Reader) -> Realtime:
    """Jobs waiting and running now, workers alive, alerts firing, and the outcomes of the last
    five minutes from the per-minute rollup: each figure costs the active jobs or the rollup's
    rows, never the jobs ever run."""
    now = datetime.datetime.now(datetime.UTC)
    figures = await _overview(conn, request)
    active = await queues.list_queues(conn)
    answer = await stats.series(conn, now - datetime.timedelta(minutes=5), now, 300)
    outcomes = dict.fromkeys(("succeeded", "failed", "retried", "aborted", "rescued"), 0)
    for series in answer.series:
        for point in series.points:
            for outcome in outcomes:
                outcomes[outcome] += getattr(point, outcome)
    return Realtime(
        waiting=sum(queue.todo for queue in active),
        running=sum(queue.doing for queue in active),
        workers_alive=figures["workers_alive"],
        alerts_firing=sum(int(count) for count in figures["alerts_firing"].values()),
        last_5_minutes=outcomes,
        at=now,
    )


class TaskStatus(BaseModel):
    task: str
    succeeded: int
    failed: int
    retried: int
    p95_seconds: float | None


@router.get("/tasks/status", response_model=list[TaskStatus], summary="Task overview")
async def task_status(
    conn: Conn,
    caller: Reader,
    hours: Annotated[int, Query(ge=1, le=24 * 30, description="How far back")] = 1,
) -> list[TaskStatus]:
    """Per task over the last hours: outcomes and the p95 duration, from the rollup (kept 30
    days, whatever pruning deleted)."""
    now = datetime.datetime.now(datetime.UTC)
    since = now - datetime.timedelta(hours=hours)
    answer = await stats.series(conn, since, now, hours * 3600)
    per_task: dict[str, TaskStatus] = {}
    for series in answer.series:
        for point in series.points:
            row = per_task.setdefault(
                series.task,
                TaskStatus(task=series.task, succeeded=0, failed=0, retried=0, p95_seconds=None),
            )
            row.succeeded += point.succeeded
            row.failed += point.failed
            row.retried += point.retried
            if point.p95 is not None:
                row.p95_seconds = max(row.p95_seconds or 0.0, point.p95)
    return sorted(per_task.values(), key=lambda row: row.task)


@router.get("/tasks/failed", response_model=jobs.JobPage, summary="Failed tasks")
async def failed_tasks(
    conn: Conn,
    caller: Reader,
    apps: Apps,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> jobs.JobPage:
    """The dead letters, newest first, each with its last error (secrets masked)."""
    filters = jobs.JobFilters(statuses=[jobs.JobStatus.failed])
    page = await jobs.list_jobs(conn, filters, limit=limit, cursor=cursor)
    return jobs.masked_page(page, apps.mask_args)


@router.get("/tasks/slow", response_model=list[stats.SlowJob], summary="Slow tasks")
async def slow_tasks(
    conn: Conn,
    caller: Reader,
    threshold: Annotated[float | None, Query(gt=0, description="Seconds; else each p95")] = None,
) -> list[stats.SlowJob]:
    """Jobs of the last day, or running, slower than the threshold or their task's p95."""
    return await stats.slow_jobs(conn, threshold=threshold)


class ScheduleRequest(BaseModel):
    task: str = Field(min_length=1, max_length=200)
    args: dict[str, Any] = Field(default_factory=dict)
    countdown: float = Field(default=0, ge=0, le=30 * 86400, description="Seconds to wait")
    queue: str | None = Field(default=None, pattern=QUEUE_PATTERN)
    priority: int | None = Field(default=None, ge=-1000, le=1000)

    @field_validator("args", mode="before")
    @classmethod
    def _json_args(cls, value: Any) -> Any:
        if isinstance(value, dict) and (problem := defer.args_problem(value)):
            raise ValueError(problem)
        return value


class Scheduled(BaseModel):
    task_id: int
    task: str
    queue: str
    eta: datetime.datetime


@router.post(
    "/tasks/schedule",
    response_model=Scheduled,
    status_code=status.HTTP_201_CREATED,
    summary="Schedule a task",
)
async def schedule_task(
    body: ScheduleRequest, conn: Conn, caller: Operator, apps: Apps
) -> Scheduled:
    """Celery's ``apply_async(countdown=...)``: the job commits with this request; its
    arguments are validated by the task's model (422 names the field, nothing is enqueued)."""
    task = apps.task(body.task)
    options: dict[str, Any] = {"schedule_in": body.countdown} if body.countdown else {}
    if body.queue:
        options["queue"] = body.queue
    if body.priority is not None:
        options["priority"] = body.priority
    job_id = await defer.defer(conn, task, body.args, **options)
    job = await jobs.get_job(conn, job_id)
    eta = job.scheduled_at or job.created_at or datetime.datetime.now(datetime.UTC)
    return Scheduled(task_id=job_id, task=task.name, queue=job.queue, eta=eta)


class ControlRequest(BaseModel):
    action: Literal["cancel", "retry", "pause", "resume"]
    task_id: int | None = Field(default=None, ge=1, le=2**63 - 1)
    queue: str | None = Field(default=None, pattern=QUEUE_PATTERN)

    @model_validator(mode="after")
    def _target(self) -> ControlRequest:
        if self.action in ("cancel", "retry") and self.task_id is None:
            raise ValueError(f"{self.action} needs task_id")
        if self.action in ("pause", "resume") and not self.queue:
            raise ValueError(f"{self.action} needs queue")
        return self


class ControlResult(BaseModel):
    action: str
    task_id: int | None = None
    status: str | None = None
    queue: str | None = None
    paused: bool | None = None


@router.post("/tasks/control", response_model=ControlResult, summary="Control a task or queue")
async def control(body: ControlRequest, conn: Conn, caller: Operator) -> ControlResult:
    """Cancel (or abort, when running) or retry a job; pause or resume a queue. Audited under
    the token's name; a job in the wrong state is a 409, an unknown one a 404."""
    if body.action == "cancel" and body.task_id is not None:
        job = await jobs.cancel_job(conn, body.task_id, actor=caller.name)
        return ControlResult(action="cancel", task_id=job.id, status=job.status)
    if body.action == "retry" and body.task_id is not None:
        job = await jobs.retry_job(conn, body.task_id, actor=caller.name)
        return ControlResult(action="retry", task_id=job.id, status=job.status)
    assert body.queue is not None
    change = queues.pause_queue if body.action == "pause" else queues.resume_queue
    queue = await change(conn, body.queue, caller.name)
    return ControlResult(action=body.action, queue=queue.name, paused=queue.paused)
