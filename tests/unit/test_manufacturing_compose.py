"""The manufacturing example's compose file: one worker pool per tier, exactly as POOLS has it,
the fifteen queues served once each, and taskhub's maintenance queue served too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from backend.cli import build_parser
from backend.declare.apps import import_app
from backend.examples.manufacturing import app as manufacturing_app
from backend.examples.manufacturing.queues import POOLS, QUEUES
from backend.examples.manufacturing.settings import ManufacturingSettings
from backend.settings import load_settings
from tests.unit.conftest import compose_services

REPOSITORY = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPOSITORY / "backend" / "examples" / "manufacturing" / "compose.yaml"
POOL_SERVICES = {f"worker-{tier}": tier for tier in POOLS}
TASKHUB_SERVICES = ("migrate", "api", *POOL_SERVICES, "worker-maintenance")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return compose_services(COMPOSE_FILE)


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment, ``${VAR:-default}`` read as its default; None for a variable
    passed through from the shell (``VAR:`` with no value)."""
    raw = service.get("environment", {})
    assert isinstance(raw, dict)
    return {
        str(key): None if value is None else re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
        for key, value in raw.items()
    }


def test_the_services_are_the_pools_the_migration_the_api_and_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == {"postgres", *TASKHUB_SERVICES}


def test_no_broker_no_beat_no_flower(services: dict[str, dict[str, Any]]) -> None:
    text = COMPOSE_FILE.read_text().lower()
    for service in services.values():
        assert "redis" not in str(service.get("image", ""))
        command = [str(part) for part in service.get("command", [])]
        assert not {"beat", "flower"} & set(command)
    assert "redis://" not in text


@pytest.mark.parametrize("name", sorted(POOL_SERVICES))
def test_each_pool_runs_its_tier_s_queues_at_its_concurrency(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    queues, concurrency = POOLS[POOL_SERVICES[name]]
    command = [str(part) for part in services[name]["command"]]

    namespace = build_parser().parse_args(command)

    assert namespace.command == "worker"
    assert namespace.queues == list(queues)
    assert namespace.concurrency == concurrency
    # One process per container: the container runs `concurrency` jobs at once, as Celery's
    # prefork --concurrency did, and the pool scales by containers.
    assert namespace.processes == 1


def test_the_pools_serve_the_fifteen_queues_once_each() -> None:
    served = [queue for queues, _ in POOLS.values() for queue in queues]

    assert len(served) == len(set(served)) == 15
    assert set(served) == set(QUEUES)


def test_a_worker_serves_taskhub_s_maintenance_queue(services: dict[str, dict[str, Any]]) -> None:
    namespace = build_parser().parse_args(services["worker-maintenance"]["command"])

    assert namespace.command == "worker"
    assert namespace.queues == ["maintenance"]


def test_taskhub_services_share_one_image_built_from_the_repository(
    services: dict[str, dict[str, Any]],
) -> None:
    builds = {str(services[name].get("build")) for name in TASKHUB_SERVICES}
    images = {str(services[name].get("image")) for name in TASKHUB_SERVICES}

    assert len(builds) == 1
    assert (COMPOSE_FILE.parent / builds.pop()).resolve() == REPOSITORY
    assert (REPOSITORY / "Dockerfile").is_file()
    assert len(images) == 1
    assert images != {"None"}


def test_every_service_loads_the_example_app(services: dict[str, dict[str, Any]]) -> None:
    for name in TASKHUB_SERVICES:
        assert environment(services[name])["TASKHUB_APPS"] == "backend.examples.manufacturing"
    assert import_app("backend.examples.manufacturing") is manufacturing_app


def test_the_settings_are_valid_and_the_critical_queues_are_the_critical_pool_s(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in environment(services["api"]).items():
        if value is not None:
            monkeypatch.setenv(key, value)

    settings = load_settings()

    assert settings.apps == ["backend.examples.manufacturing"]
    assert settings.critical_queues == list(POOLS["critical"][0])


def test_passed_through_variables_are_settings_that_exist(
    services: dict[str, dict[str, Any]],
) -> None:
    passed = {key for key, value in environment(services["api"]).items() if value is None}
    prefix = "TASKHUB_MANUFACTURING_"
    example = {key for key in passed if key.startswith(prefix)}

    assert example
    assert {key.removeprefix(prefix).lower() for key in example} <= set(
        ManufacturingSettings.model_fields
    )
    assert passed - example == {"TASKHUB_DASHBOARD_USERS"}


def test_migrate_runs_once_after_postgres_is_healthy_and_the_rest_wait_for_it(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in TASKHUB_SERVICES:
        if name != "migrate":
            assert services[name]["depends_on"] == {
                "migrate": {"condition": "service_completed_successfully"}
            }


@pytest.mark.parametrize("name", sorted(POOL_SERVICES))
def test_pools_can_scale_and_stop_gracefully(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    pool = services[name]

    assert "container_name" not in pool
    assert "ports" not in pool
    assert pool["stop_grace_period"] == "40s"
