"""What manufacturing.health_check probes, and which changes of a probe's answer are alerts.

A probe answers a :class:`Check`; it never raises for the thing it checks being down (that is
its answer). :func:`transitions` turns "up before, down now" into one alert per outage.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import smtplib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from backend.control.alerts import Severity
from backend.examples.manufacturing.payments import provider
from backend.examples.manufacturing.settings import ManufacturingSettings

try:
    import psutil
except ImportError:  # optional: memory is then not checked
    psutil = None

#: Services outside taskhub: going down raises external_service_down.
EXTERNAL = ("database", "smtp", "payment_provider")
#: The host's resources: going over a threshold raises system_resources.
RESOURCES = ("disk", "load", "memory")


@dataclass(frozen=True)
class Check:
    """One probe's answer (a row of manufacturing.health_checks)."""

    service: str
    ok: bool
    latency_ms: float | None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    """A recorded check and what the service's previous check said (None: never checked)."""

    check_id: int
    service: str
    ok: bool
    was_ok: bool | None
    error: str | None
    details: dict[str, Any]
    down_since: datetime.datetime | None = None  # the outage's first failing check


@dataclass(frozen=True)
class AlertToRaise:
    kind: Literal[
        "external_service_down",
        "external_service_recovered",
        "system_resources",
        "system_resources_recovered",
    ]
    severity: Severity
    message: str
    details: dict[str, Any]


def transitions(recorded: list[Recorded]) -> list[AlertToRaise]:
    """An alert for each service that went down (its first failing check: the previous one was
    ok, or there was none) or came back (the previous one failed); nothing while it stays."""
    alerts = []
    for row in recorded:
        resource = row.service in RESOURCES
        details = {"service": row.service, "check_id": row.check_id, **row.details}
        if not row.ok and row.was_ok is not False:
            alerts.append(
                AlertToRaise(
                    kind="system_resources" if resource else "external_service_down",
                    severity="warning" if resource else "error",
                    message=f"{row.service}: {row.error}",
                    details={**details, "error": row.error},
                )
            )
        elif row.ok and row.was_ok is False:
            alerts.append(
                AlertToRaise(
                    kind="system_resources_recovered" if resource else "external_service_recovered",
                    severity="info",
                    message=f"{row.service} is back",
                    details={**details, "down_since": row.down_since},
                )
            )
    return alerts


async def timed(service: str, probe: Callable[[], Awaitable[dict[str, Any] | None]]) -> Check:
    """Run ``probe``: ok with its details and latency, or down with its error's message."""
    started = time.perf_counter()
    try:
        details = await probe()
    except provider.PaymentError as exc:
        error = exc.message
    except Exception as exc:  # any failure of the probe is the service's answer
        error = f"{type(exc).__name__}: {exc}"
    else:
        return Check(service, True, _since(started), details=details or {})
    return Check(service, False, _since(started), error=error)


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


class ServiceDown(Exception):
    """A service answered, but not as a healthy one does."""


def _smtp_noop(host: str, port: int, timeout: float) -> None:
    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        code, answer = smtp.noop()
        if code != 250:
            raise ServiceDown(f"the mail server answered {code} {answer.decode(errors='replace')}")


async def check_smtp(settings: ManufacturingSettings) -> Check:
    """Connect to the mail server and say NOOP, within TASKHUB_MANUFACTURING_HEALTH_TIMEOUT."""

    async def probe() -> dict[str, Any]:
        host, port = settings.smtp_host, settings.smtp_port
        try:
            await asyncio.to_thread(_smtp_noop, host, port, settings.health_timeout)
        except (OSError, smtplib.SMTPException) as exc:
            raise ServiceDown(f"cannot talk to the mail server at {host}:{port}: {exc}") from None
        return {"host": host, "port": port}

    return await timed("smtp", probe)


async def check_payment_provider(settings: ManufacturingSettings) -> Check | None:
    """One authenticated request to the provider (GET /v1/health); None when it is not
    configured (nothing to check)."""
    if not settings.payment_base_url:
        return None
    quick = settings.model_copy(update={"payment_timeout": settings.health_timeout})

    async def probe() -> dict[str, Any]:
        async with provider.provider_client(quick) as client:
            await provider.ping(client)
        return {"base_url": settings.payment_base_url}

    return await timed("payment_provider", probe)


def over(service: str, used: float, limit: float, what: str, details: dict[str, Any]) -> Check:
    """A resource's check: down when ``used`` is over ``limit``."""
    details = {**details, "used": round(used, 2), "limit": limit}
    if used > limit:
        return Check(service, False, None, f"{what} {used:.1f} is over {limit:g}", details)
    return Check(service, True, None, details=details)


def existing(path: Path) -> Path:
    """``path``, or its nearest existing parent (the data dir may not be created yet)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_resources(settings: ManufacturingSettings, data_dir: Path) -> list[Check]:
    """Disk use of the data dir, the load average per CPU, and memory when psutil is there
    (load and memory are skipped where the platform cannot tell)."""
    where = existing(data_dir)
    usage = shutil.disk_usage(where)
    checks = [
        over(
            "disk",
            usage.used / usage.total * 100,
            settings.disk_max_percent,
            f"disk use (%) of {where}",
            {"path": str(where), "free_bytes": usage.free},
        )
    ]
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        pass
    else:
        cpus = os.cpu_count() or 1
        checks.append(
            over(
                "load",
                load / cpus,
                settings.load_max_per_cpu,
                "load average per CPU",
                {"load_1m": load, "cpus": cpus},
            )
        )
    if psutil is not None:
        memory = psutil.virtual_memory()
        checks.append(
            over(
                "memory",
                float(memory.percent),
                settings.memory_max_percent,
                "memory use (%)",
                {"available_bytes": int(memory.available)},
            )
        )
    return checks
