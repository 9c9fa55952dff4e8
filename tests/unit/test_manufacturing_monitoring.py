"""The monitoring family's pure logic: which check changes are alerts, resource thresholds, and
the performance rows built from the rollup's series."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from backend.control.stats import Point, Series
from backend.examples.manufacturing.monitoring import checks
from backend.examples.manufacturing.monitoring.tasks import metric_rows
from backend.examples.manufacturing.settings import ManufacturingSettings

AT = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.UTC)


def recorded(service: str, ok: bool, was_ok: bool | None) -> checks.Recorded:
    return checks.Recorded(
        check_id=7,
        service=service,
        ok=ok,
        was_ok=was_ok,
        error=None if ok else "down",
        details={},
        down_since=AT,
    )


@pytest.mark.parametrize(
    ("service", "ok", "was_ok", "kind"),
    [
        ("smtp", False, True, "external_service_down"),
        ("smtp", False, None, "external_service_down"),  # down at its first check
        ("smtp", False, False, None),  # the same outage
        ("smtp", True, False, "external_service_recovered"),
        ("smtp", True, True, None),
        ("smtp", True, None, None),
        ("disk", False, True, "system_resources"),
        ("disk", False, False, None),
        ("disk", True, False, "system_resources_recovered"),
    ],
)
def test_only_a_change_of_state_is_an_alert(
    service: str, ok: bool, was_ok: bool | None, kind: str | None
) -> None:
    alerts = checks.transitions([recorded(service, ok, was_ok)])
    assert [alert.kind for alert in alerts] == ([kind] if kind else [])


def test_alert_severities_and_details() -> None:
    down, back, full = checks.transitions(
        [
            recorded("payment_provider", False, True),
            recorded("smtp", True, False),
            recorded("disk", False, True),
        ]
    )
    assert (down.severity, down.details["service"], down.details["error"]) == (
        "error",
        "payment_provider",
        "down",
    )
    assert (back.severity, back.details["down_since"]) == ("info", AT)
    assert full.severity == "warning"


def test_over_a_threshold_is_down_and_at_it_is_not() -> None:
    at = checks.over("disk", 90.0, 90, "disk use (%)", {"path": "/"})
    over = checks.over("disk", 90.5, 90, "disk use (%)", {"path": "/"})
    assert at.ok is True
    assert over.ok is False
    assert over.error == "disk use (%) 90.5 is over 90"
    assert over.details == {"path": "/", "used": 90.5, "limit": 90}


def test_resources_of_a_data_dir_not_created_yet(tmp_path: Path) -> None:
    settings = ManufacturingSettings(disk_max_percent=100, load_max_per_cpu=1000)
    found = {check.service: check for check in checks.check_resources(settings, tmp_path / "a/b")}
    assert found["disk"].ok is True
    assert found["disk"].details["path"] == str(tmp_path.resolve())
    assert found["load"].ok is True
    assert checks.existing(tmp_path / "x" / "y") == tmp_path.resolve()


def test_a_tiny_disk_threshold_is_over(tmp_path: Path) -> None:
    settings = ManufacturingSettings(disk_max_percent=0.0001)
    [disk, *_] = checks.check_resources(settings, tmp_path)
    assert disk.ok is False


def point(succeeded: int, failed: int, retried: int = 0, p95: float | None = 1.5) -> Point:
    return Point(
        at=AT,
        succeeded=succeeded,
        failed=failed,
        retried=retried,
        aborted=0,
        rescued=0,
        rate_limited=0,
        durations=succeeded + failed,
        duration_sum=0.0,
        p50=None,
        p95=p95,
        p99=None,
    )


def test_metric_rows_per_task_and_per_queue() -> None:
    series = [
        Series(task="a", queue="q1", points=[point(8, 2, retried=1, p95=0.5)]),
        Series(task="b", queue="q1", points=[point(5, 0, p95=None)]),
    ]
    depths = [
        {"queue_name": "q1", "waiting": 4, "running": 1},
        {"queue_name": "q2", "waiting": 1001, "running": 0},
    ]
    rows = {(row.queue, row.task): row for row in metric_rows(series, depths, 5)}
    assert list(rows) == [("q1", None), ("q1", "a"), ("q1", "b"), ("q2", None)]
    task_a = rows[("q1", "a")]
    assert (task_a.succeeded, task_a.failed, task_a.retried) == (8, 2, 1)
    assert task_a.throughput_per_minute == 2.0
    assert task_a.p95_seconds == 0.5
    assert task_a.waiting is None
    assert rows[("q1", "b")].p95_seconds is None
    queue = rows[("q1", None)]
    assert (queue.succeeded, queue.failed, queue.waiting, queue.running) == (13, 2, 4, 1)
    assert queue.throughput_per_minute == 3.0
    assert (rows[("q2", None)].waiting, rows[("q2", None)].succeeded) == (1001, 0)


def test_no_series_and_no_active_job_is_no_row() -> None:
    assert metric_rows([], [], 5) == []
