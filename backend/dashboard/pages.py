"""The dashboard's pages, actions and live streams.

Pages read through backend.control, as the REST API does, on one autocommit connection each;
an action runs in one transaction with its audit row and answers with a redirect (303) to a
page that says what happened. Live streams send server-sent events woken by NOTIFY.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from psycopg.types.json import Jsonb

from backend import defer
from backend.control import alert_rules, alerts, jobs, queues, schedules, workers
from backend.control.tasks import TaskInfo
from backend.dashboard import charts
from backend.dashboard.context import (
    Dashboard,
    DashboardError,
    dashboard_of,
    operator,
    viewer,
)
from backend.dashboard.live import KEEPALIVE, MIN_INTERVAL, sse, wait_or_recheck
from backend.dashboard.rendering import base_path, redirect_with
from backend.dashboard.sessions import COOKIE, Session
from backend.db import DictConnection
from backend.declare.schedules import configured_schedules
from backend.errors import TaskhubError
from backend.maintenance import backups
from backend.queries import QUERIES, load_queries

router = APIRouter()
logger = logging.getLogger(__name__)
SQL = load_queries("backend.dashboard.sql")

PAGE_SIZE = 50
#: The most jobs one bulk action changes; run it again for more.
BULK_LIMIT = 10_000
MAX_ARGS_BYTES = 64 * 1024

Viewer = Annotated[Session, Depends(viewer)]
Operator = Annotated[Session, Depends(operator)]
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]
QueueName = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[^\x00]+$")]
Text = Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00]*$")]


def _page(request: Request, name: str, session: Session, **context: Any) -> HTMLResponse:
    return dashboard_of(request).templates.page(request, name, session=session, **context)


def _blank(value: str | None) -> str | None:
    return value.strip() or None if value else None


# -- login -------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never another site (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    dashboard = dashboard_of(request)
    if dashboard.session_of(request) is not None:
        return RedirectResponse(f"{base_path(request)}{_safe_next(next)}", status_code=303)
    return dashboard.templates.page(
        request, "login.html", next=_safe_next(next), error=None, users=_has_users(dashboard)
    )


def _has_users(dashboard: Dashboard) -> bool:
    return bool(dashboard.dashboard_settings.users)


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=4096)] = "",
    username: Annotated[str, Form(max_length=255)] = "",
    password: Annotated[str, Form(max_length=4096)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    """A token, or a user and password; on success the signed session cookie."""
    dashboard = dashboard_of(request)
    client = request.client.host if request.client else "unknown"
    wait = dashboard.throttle.retry_after(client)
    if wait is not None:
        held = dashboard.templates.page(
            request,
            "login.html",
            status_code=429,
            next=_safe_next(next),
            error=f"Too many failed logins from here: try again in {wait:.0f} s.",
            users=_has_users(dashboard),
        )
        held.headers["Retry-After"] = str(int(wait))
        logger.warning("held a dashboard login from %s: too many failures", client)
        return held
    if token:
        found = dashboard.logins.with_token(token.strip())
    elif username and password:
        # scrypt takes tens of milliseconds: off the event loop.
        found = await asyncio.to_thread(dashboard.logins.with_password, username, password)
    else:
        found = None
    if found is None:
        dashboard.throttle.failed(client)
        # Neither the token nor the user name: either may be a mistyped secret.
        logger.warning(
            "refused a dashboard login from %s (%s)",
            client,
            "a token" if token else "a user and password",
        )
        return dashboard.templates.page(
            request,
            "login.html",
            status_code=401,
            next=_safe_next(next),
            error="That token, or that user and password, is not valid.",
            users=_has_users(dashboard),
        )
    dashboard.throttle.succeeded(client)
    session, fingerprint = found
    response = RedirectResponse(f"{base_path(request)}{_safe_next(next)}", status_code=303)
    response.set_cookie(
        COOKIE,
        dashboard.signer.dump(session, fingerprint),
        max_age=int(dashboard.signer.max_age),
        path=base_path(request) or "/",
        httponly=True,
        samesite="lax",
        secure=dashboard.cookie_secure(request),
    )
    return response


@router.post("/logout")
async def logout(request: Request, session: Viewer) -> Response:
    """Ends the session (the cookie is dropped); needs the session's CSRF token."""
    form = await request.form()
    if form.get("csrf") != session.csrf:
        raise DashboardError(403, "the form's CSRF token is missing or stale")
    response = RedirectResponse(f"{base_path(request)}/login", status_code=303)
    response.delete_cookie(COOKIE, path=base_path(request) or "/")
    return response


# -- overview ----------------------------------------------------------------------------------


async def _live_figures(conn: DictConnection, dashboard: Dashboard) -> dict[str, Any]:
    """What the overview and queues pages keep current: read on the active jobs only."""
    cursor = await conn.execute(
        QUERIES["metrics_overview"], {"alive_seconds": dashboard.settings.rescue_after}
    )
    overview = await cursor.fetchone()
    assert overview is not None
    rows = await queues.list_queues(conn)
    return {
        "queues": rows,
        "workers_alive": int(overview["workers_alive"]),
        "alerts_firing": sum(int(count) for count in overview["alerts_firing"].values()),
        "waiting": sum(queue.todo for queue in rows),
        "running": sum(queue.doing for queue in rows),
    }


@router.get("/")
async def overview(
    request: Request,
    session: Viewer,
    range: Annotated[Literal["hour", "day", "week"], Query()] = "hour",
) -> HTMLResponse:
    dashboard = dashboard_of(request)
    async with dashboard.resources.connection() as conn:
        figures = await _live_figures(conn, dashboard)
        drawn = await charts.overview_charts(conn, range)
        firing = await alert_rules.firing_alerts(conn)
    return _page(
        request,
        "overview.html",
        session,
        active="overview",
        range=range,
        ranges=charts.RANGES,
        charts=drawn,
        firing=firing,
        live_url="/live/overview",
        **figures,
    )


# -- queues ------------------------------------------------------------------------------------


@router.get("/queues")
async def queue_list(request: Request, session: Viewer) -> HTMLResponse:
    dashboard = dashboard_of(request)
    async with dashboard.resources.connection() as conn:
        figures = await _live_figures(conn, dashboard)
    return _page(
        request, "queues.html", session, active="queues", live_url="/live/overview", **figures
    )


@router.post("/queues/{name}/{action}")
async def queue_action(
    request: Request,
    name: QueueName,
    action: Literal["pause", "resume", "purge"],
    session: Operator,
) -> Response:
    async with dashboard_of(request).resources.transaction() as conn:
        if action == "purge":
            purged = await queues.purge(conn, name, session.actor)
            message = f"Queue {name}: {purged.purged} waiting jobs deleted."
        elif action == "pause":
            changed = await queues.pause(conn, name, session.actor)
            message = f"Queue {name} paused." if changed else f"Queue {name} was paused already."
        else:
            changed = await queues.resume(conn, name, session.actor)
            message = f"Queue {name} resumed." if changed else f"Queue {name} was not paused."
    return redirect_with(request, "/queues", message)


# -- jobs --------------------------------------------------------------------------------------


def _parse_time(value: str | None, field: str) -> datetime.datetime | None:
    """A time from a datetime-local input (UTC) or an ISO text with its zone."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise DashboardError(422, f"{field}: not a date and time ({value[:40]!r})") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


@router.get("/jobs")
async def job_list(
    request: Request,
    session: Viewer,
    status: Annotated[jobs.JobStatus | None, Query()] = None,
    task: Text = None,
    queue: Text = None,
    since: Text = None,
    until: Text = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    id: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """Newest first, filtered; ``id`` jumps to that job."""
    if id and id.strip():
        if not id.strip().isdigit() or not 0 < int(id.strip()) < 2**63:
            raise DashboardError(422, f"a job id is a positive whole number, not {id[:20]!r}")
        return RedirectResponse(f"{base_path(request)}/jobs/{int(id.strip())}", status_code=303)
    filters = jobs.JobFilters(
        statuses=[status] if status else None,
        task=_blank(task),
        queue=_blank(queue),
        created_after=_parse_time(_blank(since), "since"),
        created_before=_parse_time(_blank(until), "until"),
    )
    dashboard = dashboard_of(request)
    async with dashboard.resources.connection() as conn:
        page = await jobs.list_jobs(conn, filters, limit=PAGE_SIZE, cursor=_blank(cursor))
    chosen = {
        "status": status.value if status else "",
        "task": _blank(task) or "",
        "queue": _blank(queue) or "",
        "since": _blank(since) or "",
        "until": _blank(until) or "",
    }
    return _page(
        request,
        "jobs.html",
        session,
        active="jobs",
        page=jobs.masked_page(page, dashboard.apps.mask_args),
        chosen=chosen,
        statuses=[status.value for status in jobs.JobStatus],
        task_names=sorted(dashboard.apps.tasks),
        next_query=_query({**chosen, "cursor": page.next_cursor}) if page.next_cursor else None,
    )


def _query(values: dict[str, Any]) -> str:
    return urlencode({key: value for key, value in values.items() if value})


@router.get("/jobs/{job_id}")
async def job_page(request: Request, job_id: JobId, session: Viewer) -> HTMLResponse:
    dashboard = dashboard_of(request)
    async with dashboard.resources.connection() as conn:
        job = jobs.masked(await jobs.get_job(conn, job_id), dashboard.apps.mask_args)
    live = job.status not in jobs.FINISHED
    return _page(
        request,
        "job.html",
        session,
        active="jobs",
        job=job,
        live_url=f"/live/jobs/{job.id}" if live else None,
    )


@router.post("/jobs/{job_id}/{action}")
async def job_action(
    request: Request, job_id: JobId, action: Literal["retry", "cancel"], session: Operator
) -> Response:
    async with dashboard_of(request).resources.transaction() as conn:
        if action == "retry":
            await jobs.retry_job(conn, job_id, session.actor)
            message = f"Job {job_id} will run again."
        else:
            job = await jobs.cancel_job(conn, job_id, session.actor)
            message = (
                f"Job {job_id} was asked to abort."
                if job.status == "doing"
                else f"Job {job_id} was cancelled."
            )
    return redirect_with(request, f"/jobs/{job_id}", message)


# -- dead letters ------------------------------------------------------------------------------


@router.get("/failed")
async def failed_list(
    request: Request,
    session: Viewer,
    task: Text = None,
    queue: Text = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    """Failed jobs, and jobs waiting to retry after a failed attempt."""
    dashboard = dashboard_of(request)
    before = jobs.decode_cursor(cursor) if cursor and cursor.strip() else None
    async with dashboard.resources.connection() as conn:
        found = await conn.execute(
            SQL["dashboard_dead_letters"],
            {
                "before_id": before,
                "task": _blank(task),
                "queue": _blank(queue),
                "limit": PAGE_SIZE + 1,
            },
        )
        rows = await found.fetchall()
    items = [
        jobs.masked(jobs.JobSummary.from_row(row), dashboard.apps.mask_args)
        for row in rows[:PAGE_SIZE]
    ]
    chosen = {"task": _blank(task) or "", "queue": _blank(queue) or ""}
    next_cursor = jobs.encode_cursor(items[-1].id) if len(rows) > PAGE_SIZE else None
    return _page(
        request,
        "failed.html",
        session,
        active="failed",
        items=items,
        chosen=chosen,
        task_names=sorted(dashboard.apps.tasks),
        next_query=_query({**chosen, "cursor": next_cursor}) if next_cursor else None,
        bulk_limit=BULK_LIMIT,
    )


@router.post("/failed/{action}")
async def failed_action(
    request: Request,
    action: Literal["retry", "cancel"],
    session: Operator,
    job_id: Annotated[int | None, Form(ge=1, le=2**63 - 1)] = None,
    task: Annotated[str, Form(max_length=255, pattern=r"^[^\x00]*$")] = "",
    queue: Annotated[str, Form(max_length=255, pattern=r"^[^\x00]*$")] = "",
) -> Response:
    """Retry failed jobs, or cancel jobs waiting to retry: one (``job_id``) or every one that
    matches the filter (at most BULK_LIMIT a click)."""
    query = "dashboard_retry_failed" if action == "retry" else "dashboard_cancel_retrying"
    params = {
        "job_id": job_id,
        "task": _blank(task),
        "queue": _blank(queue),
        "limit": BULK_LIMIT,
        "actor": session.actor,
        "bulk": job_id is None,
    }
    async with dashboard_of(request).resources.transaction() as conn:
        found = await conn.execute(SQL[query], params)
        row = await found.fetchone()
    changed = int(row["changed"]) if row else 0
    if job_id is not None and not changed:
        raise jobs.JobConflict(
            f"job {job_id} is not "
            + ("failed" if action == "retry" else "waiting to retry")
            + " (any more): nothing was changed"
        )
    verb = "will run again" if action == "retry" else "cancelled"
    plural = "job" if changed == 1 else "jobs"
    message = f"Job {job_id} {verb}." if job_id else f"{changed} {plural} {verb}."
    return redirect_with(request, "/failed?" + _query({"task": task, "queue": queue}), message)


# -- workers, schedules, backups, tasks, alerts, audit ----------------------------------------


@router.get("/workers")
async def worker_list(request: Request, session: Viewer) -> HTMLResponse:
    dashboard = dashboard_of(request)
    async with dashboard.resources.connection() as conn:
        rows = await workers.list_workers(conn, dashboard.settings.rescue_after)
    return _page(request, "workers.html", session, active="workers", workers=rows)


@router.get("/schedules")
async def schedule_list(request: Request, session: Viewer) -> HTMLResponse:
    dashboard = dashboard_of(request)
    async with dashboard.resources.connection() as conn:
        rows = await schedules.list_schedules(
            conn, dashboard.settings, blueprints=dashboard.apps.blueprints
        )
    return _page(
        request, "schedules.html", session, active="schedules", schedules=rows,
        timezone=dashboard.settings.timezone,
    )  # fmt: skip


async def _defer_now(
    request: Request, session: Session, task_name: str, args: dict[str, Any], why: str
) -> int:
    """Defer one job now in one transaction with its audit row."""
    dashboard = dashboard_of(request)
    task = dashboard.apps.task(task_name)
    async with dashboard.resources.transaction() as conn:
        job_id = await defer.defer(conn, task, args)
        await conn.execute(
            QUERIES["record_audit"],
            {
                "actor": session.actor,
                "action": why,
                "job_id": job_id,
                "details": Jsonb({"task": task_name}),
            },
        )
    return job_id


@router.post("/schedules/{task_name}/run")
async def run_schedule(request: Request, task_name: QueueName, session: Operator) -> Response:
    """Run a periodic task now, outside its schedule (its locks still apply)."""
    dashboard = dashboard_of(request)
    declared = configured_schedules(dashboard.settings, dashboard.apps.blueprints)
    if task_name not in {schedule.task_name for schedule in declared}:
        raise DashboardError(404, f"no schedule runs {task_name!r}")
    timestamp = int(datetime.datetime.now(datetime.UTC).timestamp())
    job_id = await _defer_now(request, session, task_name, {"timestamp": timestamp}, "run_now")
    return redirect_with(request, f"/jobs/{job_id}", f"{task_name} deferred now as job {job_id}.")


BACKUP_TASK = "taskhub.backup_database"


@router.get("/backups")
async def backup_list(request: Request, session: Viewer) -> HTMLResponse:
    dashboard = dashboard_of(request)
    async with dashboard.resources.connection() as conn:
        rows = await backups.list_backups(conn, limit=PAGE_SIZE)
    return _page(request, "backups.html", session, active="backups", backups=rows)


@router.post("/backups/run")
async def run_backup(request: Request, session: Operator) -> Response:
    timestamp = int(datetime.datetime.now(datetime.UTC).timestamp())
    job_id = await _defer_now(request, session, BACKUP_TASK, {"timestamp": timestamp}, "run_now")
    return redirect_with(request, f"/jobs/{job_id}", f"Backup deferred as job {job_id}.")


@router.get("/tasks")
async def task_list(request: Request, session: Viewer) -> HTMLResponse:
    dashboard = dashboard_of(request)
    overrides = dashboard.settings.rate_limit_overrides()
    infos = [
        TaskInfo.of(task, overrides)
        for task in sorted(dashboard.apps.tasks.values(), key=lambda task: task.name)
    ]
    return _page(request, "tasks.html", session, active="tasks", tasks=infos)


@router.post("/tasks/{task_name}/defer")
async def defer_task(
    request: Request,
    task_name: QueueName,
    session: Operator,
    args: Annotated[str, Form(max_length=MAX_ARGS_BYTES)] = "{}",
) -> Response:
    """Defer a job by hand: the arguments are validated as POST /jobs validates them."""
    try:
        parsed = json.loads(args or "{}")
    except ValueError as exc:
        raise DashboardError(422, f"args: not JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise DashboardError(422, "args: a JSON object is needed, like {}")
    if problem := defer.args_problem(parsed):
        raise DashboardError(422, f"args: {problem}")
    job_id = await _defer_now(request, session, task_name, parsed, "defer")
    return redirect_with(request, f"/jobs/{job_id}", f"{task_name} deferred as job {job_id}.")


@router.get("/alerts")
async def alert_list(request: Request, session: Viewer) -> HTMLResponse:
    async with dashboard_of(request).resources.connection() as conn:
        firing = await alert_rules.firing_alerts(conn)
        recent = await alerts.list_alerts(conn, limit=PAGE_SIZE)
    return _page(request, "alerts.html", session, active="alerts", firing=firing, recent=recent)


@router.get("/audit")
async def audit_log(
    request: Request,
    session: Viewer,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    before = jobs.decode_cursor(cursor) if cursor and cursor.strip() else None
    async with dashboard_of(request).resources.connection() as conn:
        found = await conn.execute(
            SQL["dashboard_audit_log"], {"before_id": before, "limit": PAGE_SIZE + 1}
        )
        rows = await found.fetchall()
    next_cursor = jobs.encode_cursor(rows[PAGE_SIZE - 1]["id"]) if len(rows) > PAGE_SIZE else None
    return _page(
        request,
        "audit.html",
        session,
        active="audit",
        entries=rows[:PAGE_SIZE],
        next_query=_query({"cursor": next_cursor}) if next_cursor else None,
    )


# -- live --------------------------------------------------------------------------------------


def _stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/live/overview")
async def live_overview(request: Request, session: Viewer) -> StreamingResponse:
    """The figures of the overview and queues pages, as HTML fragments, when jobs move."""
    dashboard = dashboard_of(request)
    await dashboard.resources.pool()

    async def events() -> AsyncIterator[str]:
        last: dict[str, str] = {}
        async with dashboard.resources.hub.watch_activity() as changed:
            while True:
                changed.clear()
                async with dashboard.resources.connection() as conn:
                    figures = await _live_figures(conn, dashboard)
                fragments = {
                    target: dashboard.templates.render(
                        f"fragments/{target}.html",
                        base=base_path(request),
                        session=session,
                        **figures,
                    )
                    for target in ("live-figures", "live-queues")
                }
                update = {key: html for key, html in fragments.items() if last.get(key) != html}
                if update:
                    last.update(update)
                    yield sse("fragments", update)
                await asyncio.sleep(MIN_INTERVAL)
                if not await wait_or_recheck(changed):
                    yield KEEPALIVE

    return _stream(events())


#: A live job page renews its registration as a waiter this often (pruning drops old ones).
WAITER_RENEWAL = 600.0


@router.get("/live/jobs/{job_id}")
async def live_job(request: Request, job_id: JobId, session: Viewer) -> StreamingResponse:
    """A job's status and progress as they change; ``reload`` once it has finished."""
    dashboard = dashboard_of(request)
    await dashboard.resources.pool()
    loop = asyncio.get_running_loop()

    async def events() -> AsyncIterator[str]:
        last: dict[str, Any] | None = None
        waiter, registered = uuid.uuid4(), loop.time()
        async with dashboard.resources.hub.watch_job(job_id) as changed:
            try:
                while True:
                    changed.clear()
                    if loop.time() - registered > WAITER_RENEWAL:
                        await _unwatch(dashboard, job_id, waiter)
                        waiter, registered = uuid.uuid4(), loop.time()
                    async with dashboard.resources.transaction() as conn:
                        # A waiter is told of progress and of the finish (NOTIFY at commit).
                        await conn.execute(
                            QUERIES["watch_job"], {"job_id": job_id, "waiter": waiter}
                        )
                        found = await conn.execute(SQL["dashboard_live_job"], {"job_id": job_id})
                        row = await found.fetchone()
                    if row is None:
                        yield sse("reload", {})
                        return
                    snapshot = _live_job(row)
                    if snapshot != last:
                        last = snapshot
                        yield sse("job", snapshot)
                    if row["status"] in jobs.FINISHED:
                        yield sse("reload", {})
                        return
                    if not await wait_or_recheck(changed):
                        yield KEEPALIVE
            finally:
                await _unwatch(dashboard, job_id, waiter)

    return _stream(events())


async def _unwatch(dashboard: Dashboard, job_id: int, waiter: uuid.UUID) -> None:
    try:
        async with dashboard.resources.connection() as conn:
            await conn.execute(QUERIES["unwatch_job"], {"job_id": job_id, "waiter": waiter})
    except (TaskhubError, OSError):  # pruning drops it within the hour
        pass


def _live_job(row: dict[str, Any]) -> dict[str, Any]:
    done, total = row["done"], row["total"]
    percent = max(0, min(100, round(100 * done / total))) if done is not None and total else None
    return {
        "status": row["status"],
        "state": row["state"],
        "attempts": row["attempts"],
        "abort_requested": row["abort_requested"],
        "done": done,
        "total": total,
        "percent": percent,
        "message": row["message"],
    }
