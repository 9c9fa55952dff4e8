"""All of taskhub's configuration, in one pydantic-settings class.

Every setting reads an environment variable with the ``TASKHUB_`` prefix, except
``DATABASE_URL``, which keeps the name every PaaS and container platform uses.
"""

from __future__ import annotations

import json
import os
import zoneinfo
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import psycopg.conninfo
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from backend.auth import ApiToken, generated_admin_token, parse_tokens
from backend.declare.policy import (
    RateLimit,
    TaskDefaults,
    parse_rate_limits,
    parse_schedules,
    parse_task_defaults,
)
from backend.errors import SettingsError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TASKHUB_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="PostgreSQL URL. When unset, taskhub starts an embedded server.",
    )
    data_dir: Path = Field(
        default=Path(".taskhub"),
        description="Where the embedded server and generated files live.",
    )
    pool_min_size: int = Field(default=1, ge=0, le=1000)
    pool_max_size: int = Field(default=10, ge=1, le=1000)
    database_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Seconds a request waits for a connection."
    )

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)

    worker_concurrency: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="Jobs a worker process runs at once, and the most it fetches in one statement.",
    )
    worker_queues: list[str] | None = Field(
        default=None, description="Queues a worker serves; all queues when unset."
    )
    worker_processes: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Worker processes `taskhub worker` and `taskhub up` run; one per core when "
        "unset.",
    )
    worker_max_jobs: int | None = Field(
        default=None,
        ge=1,
        description="Jobs a worker process takes before it is recycled: it finishes them and "
        "exits, and a fresh process takes its place. Never when unset.",
    )
    worker_max_memory_mb: int | None = Field(
        default=None,
        ge=1,
        description="Resident memory (MB) above which a worker process is recycled, checked "
        "before each fetch. Never when unset.",
    )
    worker_nice: int = Field(
        default=5,
        ge=0,
        le=19,
        description="CPU niceness of processes that only run workers: they give way to the API "
        "and other interactive processes on the same machine, and use the CPU as before when "
        "nothing else wants it. 0 keeps them level.",
    )
    fetch_polling_interval: float = Field(
        default=5.0,
        gt=0,
        description="Seconds between fallback polls; LISTEN/NOTIFY wakes workers at once.",
    )
    shutdown_grace_period: float = Field(
        default=30.0, ge=0, description="Seconds running jobs get to finish on shutdown."
    )
    heartbeat_interval: float = Field(
        default=10.0, gt=0, le=3600, description="Seconds between a worker's heartbeats."
    )
    rescue_after: float = Field(
        default=60.0,
        gt=0,
        description="Seconds without a heartbeat after which a worker's jobs are rescued.",
    )
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    log_format: str = Field(
        default="text",
        pattern=r"^(text|json)$",
        description="text: one readable line per record; json: one JSON object per line "
        "(time, level, logger, message and the record's fields: task, job_id, duration...).",
    )

    apps: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Apps to load besides taskhub's own: importable modules, comma-separated "
        "(module or module:attribute).",
    )
    task_defaults: str = Field(
        default="",
        description="Operators' task defaults per app, as JSON: "
        '{"erp": {"time_limit": 1800}, "*": {"soft_time_limit": 1500}}; they replace the '
        "app's defaults for tasks that set none of their own.",
    )

    rate_limits: str = Field(
        default="",
        description="Rate limits set or replaced by operators: task=100/m,other.task=5/s.",
    )
    tokens: str = Field(
        default="",
        repr=False,
        description="API tokens: comma-separated [name=]scope:token (scopes read, operate, admin).",
    )
    succeeded_retention_days: float = Field(
        default=7,
        gt=0,
        description="Days succeeded, cancelled and aborted jobs are kept (with their events, "
        "progress, result and errors) before pruning deletes them.",
    )
    failed_retention_days: float = Field(
        default=30, gt=0, description="Days failed jobs are kept before pruning deletes them."
    )
    prune_batch_size: int = Field(
        default=5_000, ge=1, le=1_000_000, description="Jobs deleted per pruning transaction."
    )

    timezone: str = Field(
        default="UTC", description="IANA timezone the cron schedules run in (e.g. Asia/Riyadh)."
    )
    schedule_catch_up: float = Field(
        default=600,
        ge=0,
        le=366 * 86_400,
        description="After downtime, a schedule's latest missed tick still runs if it is at "
        "most this many seconds late; older ticks are skipped. 0 skips every missed tick.",
    )
    schedules: str = Field(
        default="",
        description="Cron schedules set, replaced or turned off by operators: "
        "task=cron;other.task=off (';' separates entries, cron fields keep their spaces).",
    )

    backup_dir: Path | None = Field(
        default=None, description="Where backups are written; <data_dir>/backups when unset."
    )
    backup_keep: int = Field(
        default=7, ge=1, le=100_000, description="Successful backups always kept (the newest)."
    )
    backup_keep_days: float = Field(
        default=0,
        ge=0,
        description="Also keep every backup younger than this many days (0: count only).",
    )
    pg_bin_dir: Path | None = Field(
        default=None,
        description="Directory with pg_dump and pg_restore; found automatically when unset.",
    )

    alert_backlog: int = Field(
        default=1000,
        ge=0,
        description="Alert when a queue has more waiting jobs than this (0: off).",
    )
    alert_oldest_age: float = Field(
        default=600,
        ge=0,
        description="Alert when a queue's oldest waiting job is older than this, seconds (0: off).",
    )
    alert_failure_rate: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Alert when a task's share of failed finishes over TASKHUB_ALERT_WINDOW "
        "exceeds this (0: off).",
    )
    alert_failure_min_jobs: int = Field(
        default=5,
        ge=1,
        description="Finished jobs a task needs in the window before its failure rate counts.",
    )
    alert_window: float = Field(
        default=900,
        gt=0,
        le=7 * 86_400,
        description="Seconds of recent finishes the failure rate and critical failures look at.",
    )
    critical_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Queues whose every final failure alerts: payment.critical,other.",
    )
    alert_stalled_after: float = Field(
        default=3600,
        ge=0,
        description="Alert when a job has been running longer than this, seconds (0: off).",
    )
    alert_backup_age: float = Field(
        default=26 * 3600,
        ge=0,
        description="Alert when the newest successful backup is older than this, seconds (0: off).",
    )
    alert_webhooks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URLs each alert transition is POSTed to, signed: https://a/hook,https://b.",
    )
    alert_webhook_secret: str = Field(
        default="",
        repr=False,
        description="HMAC-SHA256 key of the X-Taskhub-Signature header; required with webhooks.",
    )

    @field_validator("critical_queues", mode="before")
    @classmethod
    def _split_critical_queues(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [queue.strip() for queue in value.split(",") if queue.strip()]
        return value

    @field_validator("alert_webhooks", mode="before")
    @classmethod
    def _split_webhooks(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            value = [url.strip() for url in value.split(",") if url.strip()]
        if isinstance(value, list):
            for url in value:
                parts = urlsplit(str(url))
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value

    @field_validator("alert_webhook_secret")
    @classmethod
    def _secret_with_webhooks(cls, value: str, info: object) -> str:
        if getattr(info, "data", {}).get("alert_webhooks") and not value:
            raise ValueError(
                "must be set when TASKHUB_ALERT_WEBHOOKS is: receivers verify the signature "
                "with it (e.g. the output of `openssl rand -hex 32`)"
            )
        return value

    @field_validator("rescue_after")
    @classmethod
    def _rescue_after_heartbeats(cls, value: float, info: object) -> float:
        heartbeat = getattr(info, "data", {}).get("heartbeat_interval", 10.0)
        if value < 2 * heartbeat:
            raise ValueError(
                f"must be at least twice TASKHUB_HEARTBEAT_INTERVAL ({heartbeat}): "
                "a live worker would otherwise lose its jobs"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not an IANA timezone name (e.g. UTC, Asia/Riyadh)") from None
        return value

    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @field_validator("schedules")
    @classmethod
    def _check_schedules(cls, value: str) -> str:
        parse_schedules(value)
        return value

    def schedule_overrides(self) -> dict[str, str | None]:
        """Operators' cron per task name; None turns a schedule off."""
        return parse_schedules(self.schedules)

    @property
    def backups_path(self) -> Path:
        return (self.backup_dir or self.data_dir / "backups").resolve()

    @field_validator("rate_limits")
    @classmethod
    def _check_rate_limits(cls, value: str) -> str:
        parse_rate_limits(value)
        return value

    def rate_limit_overrides(self) -> dict[str, RateLimit]:
        return parse_rate_limits(self.rate_limits)

    @field_validator("task_defaults")
    @classmethod
    def _check_task_defaults(cls, value: str) -> str:
        parse_task_defaults(value)
        return value

    def task_defaults_overrides(self) -> dict[str, TaskDefaults]:
        return parse_task_defaults(self.task_defaults)

    @field_validator("apps", mode="before")
    @classmethod
    def _split_apps(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().startswith("["):
            return json.loads(value)  # as a parent passes it to its worker processes
        if isinstance(value, str):
            return [app.strip() for app in value.split(",") if app.strip()]
        return value

    @field_validator("tokens")
    @classmethod
    def _check_tokens(cls, value: str) -> str:
        parse_tokens(value)
        return value

    def api_tokens(self) -> list[ApiToken]:
        """The configured tokens, or the generated admin token when there are none."""
        return parse_tokens(self.tokens) or [generated_admin_token(self.data_dir)]

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (e.g. postgresql://user@host/db)")
        try:
            psycopg.conninfo.conninfo_to_dict(value)
            urlsplit(value).port  # noqa: B018 - raises on a port that is not a number
        except (psycopg.ProgrammingError, ValueError) as exc:
            raise ValueError(f"is not a valid PostgreSQL URL: {exc}") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("worker_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            queues = [queue.strip() for queue in value.split(",") if queue.strip()]
            return queues or None
        return value

    @field_validator("worker_processes", "worker_max_jobs", "worker_max_memory_mb", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def worker_process_count(self) -> int:
        """TASKHUB_WORKER_PROCESSES, or one per core."""
        return self.worker_processes or os.cpu_count() or 1

    @field_validator("pool_max_size")
    @classmethod
    def _check_pool_sizes(cls, value: int, info: object) -> int:
        data = getattr(info, "data", {})
        minimum = data.get("pool_min_size", 1)
        if value < minimum:
            raise ValueError(f"must be at least TASKHUB_POOL_MIN_SIZE ({minimum})")
        return value

    @property
    def embedded_data_dir(self) -> Path:
        return self.data_dir.resolve() / "pgdata"


def env_name(field: str) -> str:
    """The environment variable a user sets for a settings field."""
    name = field.upper()
    if name == "DATABASE_URL":
        return name
    return name if name.startswith("TASKHUB_") else f"TASKHUB_{name}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning validation errors into one line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        hidden = field in ("tokens", "alert_webhook_secret")
        value = "<hidden>" if hidden else repr(first.get("input"))
        message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"invalid setting {env_name(field)}={value}: {message}") from None
