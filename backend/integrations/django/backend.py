"""A backend for Django's task framework that enqueues into taskhub on Django's own connection.

``enqueue()`` inserts the job with Django's psycopg 3 connection, inside whatever
``transaction.atomic()`` is open: the job commits or rolls back with the ORM's writes, and a
worker never sees a job whose rows are not there. A Django task is the taskhub task named by
its function's module path (``Task.module_path``, e.g. ``hrms.salaries.tasks.sync_chart``).
"""

from __future__ import annotations

import builtins
import datetime
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created
from django.utils import timezone
from django.utils.inspect import get_func_args
from django.utils.module_loading import import_string
from procrastinate.retry import RetryValue
from psycopg.rows import dict_row
from psycopg.types.json import JsonbLoader, JsonLoader
from pydantic import BaseModel, ConfigDict, Field

from backend.control.jobs import JobStatus, JobView
from backend.declare.policy import RateLimit, TaskDefaults, TaskDefaultsEntry, check_cron
from backend.declare.registry import TaskBlueprint, TaskDefinition
from backend.defer import MAX_ARGS_DEPTH, defer_sync
from backend.errors import InvalidJobArguments
from backend.integrations.django.compat import (
    BaseTaskBackend,
    InvalidTaskError,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_finished,
    task_started,
)
from backend.queries import QUERIES
from backend.runtime.context import TaskContext as JobContext
from backend.runtime.progress import Progress

if TYPE_CHECKING:
    from django_tasks.base import TASK_REFRESH_ATTRS
else:
    TASK_REFRESH_ATTRS = {
        "errors",
        "_return_value",
        "finished_at",
        "started_at",
        "last_attempted_at",
        "status",
        "enqueued_at",
        "worker_ids",
    }

P = ParamSpec("P")
T = TypeVar("T")


class ArgumentsNotJSON(InvalidJobArguments):
    """A Django task's arguments must be JSON: ids, strings, numbers, booleans, lists, dicts."""


class DjangoTaskArgs(BaseModel):
    """A Django task's job arguments as stored: the call's positional and keyword arguments."""

    model_config = ConfigDict(extra="forbid")

    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class PeriodicDjangoTaskArgs(DjangoTaskArgs):
    """A periodic task's (``cron=``): the tick's ``timestamp`` too, which the function does not
    get."""

    timestamp: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskhubTask(Task[P, T]):
    """A Django ``Task`` with taskhub's policies: ``@task(queue_name=..., retry=Retry(...))``.

    Django's ``task()`` decorator passes unknown keywords to the backend's ``task_class``, so
    these are set on the decorator itself. Their meaning is ``blueprint.task``'s.
    """

    retry: RetryValue | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    lock: str | None = None
    queueing_lock: str | None = None
    cron: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskhubTaskResult(TaskResult[T]):
    """Django's task result, plus taskhub's own view of the job.

    ``state`` is Celery's name (PENDING, STARTED, PROGRESS, RETRY, SUCCESS, FAILURE, REVOKED),
    ``progress`` the task's last report; ``attempts`` counts the runs started.
    """

    state: str = "PENDING"
    progress: Progress | None = None

    def refresh(self) -> None:
        fresh = self.task.get_backend().get_result(self.id)
        for name in (*TASK_REFRESH_ATTRS, "state", "progress"):
            object.__setattr__(self, name, getattr(fresh, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskhubTaskContext(TaskContext):
    """Django's task context, with taskhub's: ``context.job.progress(...)``, aborts, limits."""

    job: JobContext

    @property
    def attempt(self) -> int:
        return self.job.attempt


BLUEPRINT = TaskBlueprint()
_registering = threading.Lock()


def definition_for(task: Task[Any, Any]) -> TaskDefinition[Any]:
    """The taskhub task behind a Django task (declared on first use, by module path)."""
    name = task.module_path
    with _registering:
        found = BLUEPRINT.tasks.get(name)
        if found is not None:
            return found
        declare = BLUEPRINT.task(
            name=name,
            queue=task.queue_name,
            priority=task.priority,
            retry=getattr(task, "retry", None),
            time_limit=getattr(task, "time_limit", None),
            soft_time_limit=getattr(task, "soft_time_limit", None),
            rate_limit=getattr(task, "rate_limit", None),
            lock=getattr(task, "lock", None),
            queueing_lock=getattr(task, "queueing_lock", None),
            cron=getattr(task, "cron", None),
        )
        return declare(_periodic_runner(name) if getattr(task, "cron", None) else _runner(name))


def _runner(path: str) -> Any:
    def run(args: DjangoTaskArgs, ctx: JobContext) -> Any:
        return run_django_task(path, args, ctx)

    run.__name__ = run.__qualname__ = path.rpartition(".")[2]
    return run


def _periodic_runner(path: str) -> Any:
    def run(args: PeriodicDjangoTaskArgs, ctx: JobContext) -> Any:
        return run_django_task(path, args, ctx)

    run.__name__ = run.__qualname__ = path.rpartition(".")[2]
    return run


def _mark_connection(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    connection.taskhub_pid = os.getpid()  # type: ignore[attr-defined]


connection_created.connect(_mark_connection, dispatch_uid="taskhub-connection-pid")


def _drop_inherited_connections() -> None:
    """A task run in a forked child (a hard time limit) must not use the worker's sockets,
    which the child has closed: forget them, without a goodbye on a socket not its own."""
    for connection in connections.all(initialized_only=True):
        pid = getattr(connection, "taskhub_pid", None)
        if connection.connection is not None and pid not in (None, os.getpid()):
            connection.connection = None
            connection.in_atomic_block = False
            connection.savepoint_ids = []
            connection.needs_rollback = False


def run_django_task(path: str, args: DjangoTaskArgs, ctx: JobContext) -> Any:
    """Run a Django task in a worker, as Django's request cycle runs a view: connections
    checked before and closed after (CONN_MAX_AGE), signals sent."""
    task = import_string(path)
    if not isinstance(task, Task):
        raise TypeError(f"{path} is not a Django task (a function decorated with @task)")
    _drop_inherited_connections()
    close_old_connections()
    backend = task.get_backend()
    now = timezone.now()
    result: TaskhubTaskResult[Any] = TaskhubTaskResult(
        task=task,
        id=str(ctx.job_id),
        status=TaskResultStatus.RUNNING,
        enqueued_at=None,
        started_at=now,
        finished_at=None,
        last_attempted_at=now,
        args=args.args,
        kwargs=args.kwargs,
        backend=backend.alias,
        errors=[],
        worker_ids=["taskhub"] * ctx.attempt,
        state="STARTED",
    )
    task_started.send(type(backend), task_result=result)
    try:
        if task.takes_context:
            context = TaskhubTaskContext(task_result=result, job=ctx)
            value = task.call(context, *args.args, **args.kwargs)
        else:
            value = task.call(*args.args, **args.kwargs)
    except BaseException:
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
        object.__setattr__(result, "finished_at", timezone.now())
        task_finished.send(type(backend), task_result=result)
        raise
    finally:
        close_old_connections()
    object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "finished_at", timezone.now())
    object.__setattr__(result, "_return_value", value)
    task_finished.send(type(backend), task_result=result)
    return value


def json_problem(value: Any, where: str) -> str | None:
    """Where ``value`` stops being JSON, and what it is there; None when it is all JSON."""
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_ARGS_DEPTH:
            return f"{path} nests deeper than {MAX_ARGS_DEPTH} levels"
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{path} is {item}, which JSON cannot hold"
        elif isinstance(item, str):
            if "\x00" in item:
                return f"{path} contains a NUL character"
        elif isinstance(item, list | tuple):
            stack.extend((part, f"{path}[{index}]", depth + 1) for index, part in enumerate(item))
        elif isinstance(item, dict):
            for key, part in item.items():
                if not isinstance(key, str):
                    return f"{path} has a key {key!r} that is not a string"
                stack.append((part, f"{path}[{key!r}]", depth + 1))
        else:
            return f"{path} is a {type(item).__name__}"
    return None


def check_json_arguments(
    task: Task[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> None:
    """Refuse what would not survive the trip through a JSON column unchanged."""
    for value, where in ((list(args), "args"), (dict(kwargs), "kwargs")):
        problem = json_problem(value, where)
        if problem:
            raise ArgumentsNotJSON(
                f"task {task.module_path}: {problem}, not JSON; pass ids, strings, numbers, "
                "booleans, lists and dicts (e.g. a model's pk, a date's isoformat())",
                [{"loc": [where], "msg": problem, "type": "json_type"}],
            )


STATUSES = {
    JobStatus.todo: TaskResultStatus.READY,
    JobStatus.doing: TaskResultStatus.RUNNING,
    JobStatus.succeeded: TaskResultStatus.SUCCESSFUL,
}


def exception_path(error_type: str, trace: str | None) -> str:
    """The exception's dotted path, as Django's ``TaskError`` wants it: the traceback's last
    line names it in full (``builtins`` for the built-in ones)."""
    lines = [line for line in (trace or "").splitlines() if line.strip()]
    named = lines[-1].partition(":")[0].strip() if lines else ""
    if named.endswith(error_type) and "." in named:
        return named
    return f"builtins.{error_type}" if hasattr(builtins, error_type) else error_type


def result_of(view: JobView, task: Task[Any, Any], backend: str) -> TaskhubTaskResult[Any]:
    starts = [event.at for event in view.events if event.type == "started"]
    worker = f"taskhub-worker-{view.worker_id}" if view.worker_id else "taskhub-worker"
    result: TaskhubTaskResult[Any] = TaskhubTaskResult(
        task=task,
        id=str(view.id),
        status=STATUSES.get(view.status, TaskResultStatus.FAILED),
        enqueued_at=view.created_at,
        started_at=view.started_at,
        finished_at=view.finished_at,
        last_attempted_at=starts[-1] if starts else None,
        args=view.args.get("args", []),
        kwargs=view.args.get("kwargs", {}),
        backend=backend,
        errors=[
            TaskError(
                exception_class_path=exception_path(error.type, error.traceback),
                traceback=error.traceback or f"{error.type}: {error.message}",
            )
            for error in view.errors
        ],
        worker_ids=[worker] * len(starts),
        state=view.state.value,
        progress=view.progress,
    )
    object.__setattr__(result, "_return_value", view.result)
    return result


class TaskhubBackend(BaseTaskBackend):
    """``TASKS = {"default": {"BACKEND": "backend.integrations.django.TaskhubBackend"}}``.

    OPTIONS: ``DATABASE`` (the alias of ``DATABASES`` to enqueue on, ``default``) and
    ``DEFAULTS`` (taskhub's defaults for every task of the project: ``retry``, ``time_limit``,
    ``soft_time_limit``, ``rate_limit``, as in ``TASKHUB_TASK_DEFAULTS``).
    """

    task_class = TaskhubTask
    supports_defer = True
    supports_async_task = False
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database: str = self.options.get("DATABASE", "default")
        raw_defaults = self.options.get("DEFAULTS", {})
        try:
            entry = TaskDefaultsEntry.model_validate(raw_defaults)
            self.defaults = TaskDefaults(**entry.model_dump(exclude_none=True))
        except ValueError as exc:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['DEFAULTS']: {exc}") from None

    def validate_task(self, task: Task[Any, Any]) -> None:
        super().validate_task(task)
        if not isinstance(task, TaskhubTask):
            return
        soft, hard = task.soft_time_limit, task.time_limit
        for name, limit in (("time_limit", hard), ("soft_time_limit", soft)):
            if limit is not None and not limit > 0:
                raise InvalidTaskError(f"{name} must be a number of seconds above 0")
        if soft and hard and soft >= hard:
            raise InvalidTaskError(
                f"soft_time_limit ({soft:g} s) must be below time_limit ({hard:g} s)"
            )
        try:
            if task.rate_limit is not None:
                RateLimit.parse(task.rate_limit)
            if task.cron is not None:
                check_cron(task.cron)
        except ValueError as exc:
            raise InvalidTaskError(str(exc)) from None
        if task.cron is not None:
            required = get_func_args(task.func)[1 if task.takes_context else 0 :]
            if required:
                raise InvalidTaskError(
                    f"periodic task {task.module_path} (cron={task.cron!r}) is called without "
                    f"arguments, but takes {', '.join(required)}"
                )

    def connection(self) -> psycopg.Connection[Any]:
        """Django's psycopg 3 connection for ``DATABASE``, in its current transaction."""
        wrapper = connections[self.database]
        if wrapper.vendor != "postgresql":
            raise ImproperlyConfigured(
                f"TASKS[{self.alias!r}]: taskhub needs PostgreSQL; DATABASES[{self.database!r}] "
                f"is {wrapper.vendor}"
            )
        wrapper.ensure_connection()
        wrapper.validate_no_broken_transaction()
        raw = wrapper.connection
        if not isinstance(raw, psycopg.Connection):
            raise ImproperlyConfigured(
                f"TASKS[{self.alias!r}]: taskhub needs Django's psycopg 3 driver "
                "(pip install 'psycopg[binary]'); psycopg2 is in use"
            )
        return raw

    def enqueue(self, task: Task[P, T], args: Any, kwargs: Any) -> TaskResult[T]:
        """One INSERT on Django's connection: committed (or not) with the caller's atomic."""
        self.validate_task(task)
        check_json_arguments(task, args, kwargs)
        definition = definition_for(task)
        run_after: datetime.datetime | None = task.run_after
        job_id = defer_sync(
            self.connection(),
            definition,
            {"args": list(args), "kwargs": dict(kwargs)},
            queue=task.queue_name,
            priority=task.priority,
            schedule_at=run_after,
        )
        result: TaskhubTaskResult[T] = TaskhubTaskResult(
            task=task,
            id=str(job_id),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=json.loads(json.dumps(list(args))),
            kwargs=json.loads(json.dumps(dict(kwargs))),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        return result

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The job as taskhub sees it now; ``TaskResultDoesNotExist`` once pruned."""
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"{result_id!r} is not a taskhub job id") from None
        with self.connection().cursor(row_factory=dict_row) as cursor:
            # Django loads json as text (it parses JSON fields itself): this cursor parses it.
            cursor.adapters.register_loader("jsonb", JsonbLoader)
            cursor.adapters.register_loader("json", JsonLoader)
            cursor.execute(QUERIES["get_job"], {"job_id": job_id})
            row = cursor.fetchone()
        if row is None:
            raise TaskResultDoesNotExist(f"job {job_id} not found (never enqueued, or pruned)")
        view = JobView.from_row(row)
        try:
            task = import_string(view.task)
        except ImportError:
            task = None
        if not isinstance(task, Task):
            raise TaskResultDoesNotExist(
                f"job {job_id} runs {view.task}, which is not a Django task of this project"
            )
        return result_of(view, task, self.alias)


def project_defaults(alias: str = "default") -> TaskDefaults:
    """The ``DEFAULTS`` option of a TaskhubBackend, for the project's TaskhubApp."""
    from backend.integrations.django.compat import task_backends

    backend = task_backends[alias]
    return backend.defaults if isinstance(backend, TaskhubBackend) else TaskDefaults()
