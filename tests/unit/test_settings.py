"""Settings: defaults, environment variables, and one-line errors naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.errors import SettingsError
from backend.settings import env_name, load_settings
from tests.unit.conftest import is_taskhub_variable


def test_the_real_environment_does_not_leak_in() -> None:
    assert not [name for name in os.environ if is_taskhub_variable(name)]


def test_defaults() -> None:
    settings = load_settings()

    assert settings.database_url is None
    assert settings.data_dir == Path(".taskhub")
    assert settings.embedded_data_dir == Path(".taskhub").resolve() / "pgdata"
    assert (settings.pool_min_size, settings.pool_max_size) == (1, 10)
    assert settings.database_timeout == 5.0
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8000)
    assert settings.worker_concurrency == 50
    assert settings.worker_queues is None
    assert settings.fetch_polling_interval == 5.0
    assert settings.shutdown_grace_period == 30.0
    assert settings.log_level == "INFO"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.api_port = 1  # type: ignore[misc]


def test_database_url_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@db.example:6543/shop")

    assert load_settings().database_url == "postgresql://app:secret@db.example:6543/shop"


def test_an_empty_database_url_means_the_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")

    assert load_settings().database_url is None


def test_taskhub_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKHUB_API_PORT", "9001")
    monkeypatch.setenv("TASKHUB_POOL_MIN_SIZE", "2")
    monkeypatch.setenv("TASKHUB_POOL_MAX_SIZE", "4")
    monkeypatch.setenv("TASKHUB_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("TASKHUB_DATA_DIR", "/srv/taskhub")

    settings = load_settings()

    assert settings.api_port == 9001
    assert (settings.pool_min_size, settings.pool_max_size) == (2, 4)
    assert settings.log_level == "DEBUG"
    assert settings.embedded_data_dir == Path("/srv/taskhub/pgdata")


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI passes --port and friends as overrides; they beat TASKHUB_* variables."""
    monkeypatch.setenv("TASKHUB_API_PORT", "9001")

    assert load_settings(api_port=7000).api_port == 7000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a, b,,c", ["a", "b", "c"]),
        ("emails", ["emails"]),
        (" , ,", None),
        ('["x", "y"]', ["x", "y"]),
    ],
)
def test_worker_queues_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str] | None
) -> None:
    monkeypatch.setenv("TASKHUB_WORKER_QUEUES", raw)

    assert load_settings().worker_queues == expected


@pytest.mark.parametrize(
    ("field", "variable"),
    [
        ("database_url", "DATABASE_URL"),
        ("api_port", "TASKHUB_API_PORT"),
        ("fetch_polling_interval", "TASKHUB_FETCH_POLLING_INTERVAL"),
    ],
)
def test_env_name(field: str, variable: str) -> None:
    assert env_name(field) == variable


@pytest.mark.parametrize(
    ("environment", "variable", "problem"),
    [
        ({"TASKHUB_API_PORT": "abc"}, "TASKHUB_API_PORT", "valid integer"),
        ({"TASKHUB_API_PORT": "70000"}, "TASKHUB_API_PORT", "less than or equal to 65535"),
        ({"TASKHUB_API_PORT": "0"}, "TASKHUB_API_PORT", "greater than or equal to 1"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL", "must start with postgresql://"),
        ({"DATABASE_URL": "postgresql://h:port/db"}, "DATABASE_URL", "not a valid PostgreSQL URL"),
        (
            {"TASKHUB_POOL_MIN_SIZE": "5", "TASKHUB_POOL_MAX_SIZE": "2"},
            "TASKHUB_POOL_MAX_SIZE",
            "must be at least TASKHUB_POOL_MIN_SIZE (5)",
        ),
        ({"TASKHUB_LOG_LEVEL": "LOUD"}, "TASKHUB_LOG_LEVEL", "should match pattern"),
        (
            {"TASKHUB_FETCH_POLLING_INTERVAL": "0"},
            "TASKHUB_FETCH_POLLING_INTERVAL",
            "greater than 0",
        ),
        (
            {"TASKHUB_WORKER_CONCURRENCY": "0"},
            "TASKHUB_WORKER_CONCURRENCY",
            "greater than or equal",
        ),
        ({"TASKHUB_DATABASE_TIMEOUT": "soon"}, "TASKHUB_DATABASE_TIMEOUT", "valid number"),
        (
            {"TASKHUB_SHUTDOWN_GRACE_PERIOD": "-1"},
            "TASKHUB_SHUTDOWN_GRACE_PERIOD",
            "greater than or equal to 0",
        ),
    ],
)
def test_invalid_settings_raise_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], variable: str, problem: str
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    message = str(caught.value)
    assert message == caught.value.message
    assert "\n" not in message
    assert message.startswith(f"invalid setting {variable}=")
    assert repr(environment[variable]) in message
    assert problem in message
    assert caught.value.__suppress_context__, "the pydantic traceback should not be chained"


def test_an_invalid_database_url_override_names_database_url() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(database_url="mysql://x")

    assert caught.value.message.startswith("invalid setting DATABASE_URL='mysql://x': ")
    assert "must start with postgresql://" in caught.value.message


def test_equal_pool_sizes_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKHUB_POOL_MIN_SIZE", "5")
    monkeypatch.setenv("TASKHUB_POOL_MAX_SIZE", "5")

    settings = load_settings()

    assert (settings.pool_min_size, settings.pool_max_size) == (5, 5)


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKHUB_LOG_LEVEL", "debug")
    assert load_settings().log_level == "DEBUG"


def test_rescue_after_must_outlast_two_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKHUB_HEARTBEAT_INTERVAL", "10")
    monkeypatch.setenv("TASKHUB_RESCUE_AFTER", "15")
    with pytest.raises(SettingsError, match=r"TASKHUB_RESCUE_AFTER=.*twice TASKHUB_HEARTBEAT"):
        load_settings()
    monkeypatch.setenv("TASKHUB_RESCUE_AFTER", "20")
    assert load_settings().rescue_after == 20


def test_rate_limit_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKHUB_RATE_LIMITS", "taskhub.ping=5/s")
    assert str(load_settings().rate_limit_overrides()["taskhub.ping"]) == "5/s"
    monkeypatch.setenv("TASKHUB_RATE_LIMITS", "taskhub.ping=fast")
    with pytest.raises(SettingsError, match="TASKHUB_RATE_LIMITS"):
        load_settings()
