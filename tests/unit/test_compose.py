"""compose.yaml: one image and one database for every taskhub service, workers that scale."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg.conninfo
import pytest

from backend.cli import build_parser
from backend.settings import load_settings
from tests.unit.conftest import compose_services

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "compose.yaml"
TASKHUB_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return compose_services(COMPOSE_FILE)


def interpolate(value: str) -> str:
    """compose's ``${VAR:-default}`` with nothing set in the shell: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, in either of compose's forms (mapping or KEY=VALUE list)."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        pairs = dict(str(item).split("=", 1) for item in raw)
    else:
        pairs = {str(key): str(value) for key, value in raw.items()}
    return {key: interpolate(value) for key, value in pairs.items()}


def test_the_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", "migrate", "api", "worker"}


def test_taskhub_services_share_one_image(services: dict[str, dict[str, Any]]) -> None:
    builds = {str(services[name].get("build")) for name in TASKHUB_SERVICES}
    images = {str(services[name].get("image")) for name in TASKHUB_SERVICES}

    assert builds == {"."}
    assert len(images) == 1
    assert images != {"None"}


def test_taskhub_services_share_one_database_each_as_its_own_login(
    services: dict[str, dict[str, Any]],
) -> None:
    urls = {name: environment(services[name]).get("DATABASE_URL") for name in TASKHUB_SERVICES}
    places, users = set(), {}
    for name, url in urls.items():
        assert url is not None
        assert load_settings(database_url=url).database_url == url
        params = psycopg.conninfo.conninfo_to_dict(url)
        places.add((params["host"], params.get("port"), params["dbname"]))
        users[name] = params["user"]

    assert len(places) == 1
    # docs/operations.md, "Database roles": the logins deploy/postgres/taskhub-roles.sh creates.
    assert users == {
        "migrate": "taskhub_migrator",
        "api": "taskhub_api_user",
        "worker": "taskhub_worker_user",
    }
    init = Path(__file__).resolve().parents[2] / "deploy/postgres/taskhub-roles.sh"
    script = init.read_text()
    for user, role in [
        ("taskhub_migrator", "taskhub_owner"),
        ("taskhub_api_user", "taskhub_api"),
        ("taskhub_worker_user", "taskhub_worker"),
    ]:
        assert f"CREATE ROLE {user} LOGIN PASSWORD" in script
        assert re.search(rf"CREATE ROLE {user} .* IN ROLE {role};", script)
    mounts = [str(volume) for volume in services["postgres"].get("volumes", [])]
    assert any("taskhub-roles.sh:/docker-entrypoint-initdb.d/" in mount for mount in mounts)


def test_the_database_url_points_at_the_postgres_service(
    services: dict[str, dict[str, Any]],
) -> None:
    url = environment(services["api"])["DATABASE_URL"]
    postgres = environment(services["postgres"])

    params = psycopg.conninfo.conninfo_to_dict(url)

    assert params["host"] == "postgres"
    assert str(params.get("port", 5432)) == "5432"
    # Its own login, with the password the init script gives it; never the superuser.
    assert params["user"] == "taskhub_api_user" != postgres["POSTGRES_USER"]
    assert params["password"] == postgres["TASKHUB_API_DB_PASSWORD"]
    assert params["dbname"] == postgres["POSTGRES_DB"]


def test_taskhub_settings_in_compose_are_valid(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in TASKHUB_SERVICES:
        for key, value in environment(services[name]).items():
            monkeypatch.setenv(key, value)
        load_settings()


@pytest.mark.parametrize("name", TASKHUB_SERVICES)
def test_every_command_parses(services: dict[str, dict[str, Any]], name: str) -> None:
    command = services[name]["command"]

    assert isinstance(command, list)
    assert command[0] == name
    namespace = build_parser().parse_args([str(part) for part in command])
    assert namespace.command == name


def test_the_api_listens_on_all_interfaces_on_the_published_port(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    namespace = build_parser().parse_args(api["command"])

    assert namespace.host == "0.0.0.0"
    assert [str(port) for port in api["ports"]] == [f"{namespace.port}:{namespace.port}"]


def test_workers_can_scale(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]

    assert "container_name" not in worker
    assert "ports" not in worker


def test_migrate_runs_once_after_postgres_is_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    migrate = services["migrate"]

    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "healthcheck" in services["postgres"]


@pytest.mark.parametrize("name", ["api", "worker"])
def test_services_wait_for_the_migration(services: dict[str, dict[str, Any]], name: str) -> None:
    depends_on = services[name]["depends_on"]

    assert depends_on["migrate"] == {"condition": "service_completed_successfully"}
