"""Loading apps: what each brings, what stops the start, how task defaults resolve."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest
from procrastinate.retry import RetryStrategy
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend import cli
from backend.declare.apps import AppError, TaskhubApp, check_apps, import_app, load_apps
from backend.declare.policy import RateLimit, TaskDefaults
from backend.declare.registry import TaskBlueprint
from backend.errors import SettingsError, UnknownTask
from backend.settings import load_settings


def blueprint_with(*names: str, **options: object) -> TaskBlueprint:
    blueprint = TaskBlueprint()
    for name in names:

        def task() -> None:
            pass

        blueprint.task(name=name, **options)(task)  # type: ignore[arg-type]
    return blueprint


def test_the_builtin_app_is_always_loaded_first() -> None:
    apps = load_apps(load_settings())
    assert apps.apps[0].name == "taskhub"
    assert "taskhub.ping" in apps.tasks
    with pytest.raises(UnknownTask, match=r"registered tasks: .*taskhub\.ping"):
        apps.task("acme.nope")


def test_an_app_module_is_found_by_name_or_attribute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_tasks.py").write_text(
        textwrap.dedent(
            """
            from backend.declare.apps import TaskhubApp
            from backend.declare.registry import TaskBlueprint
            blueprint = TaskBlueprint()
            @blueprint.task(name="acme.hello")
            def hello() -> str:
                return "hi"
            app = TaskhubApp(name="acme", blueprints=[blueprint])
            other = TaskhubApp(name="other")
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_app("acme_tasks").name == "acme"
    assert import_app("acme_tasks:other").name == "other"
    apps = load_apps(load_settings(apps="acme_tasks"))
    assert [app.name for app in apps.apps] == ["taskhub", "acme"]
    assert apps.task("acme.hello").queue == "default"
    with pytest.raises(AppError, match=r"^app acme_tasks:blueprint: .* is a TaskBlueprint, not"):
        import_app("acme_tasks:blueprint")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("raise RuntimeError('boom at import')", "cannot import it: RuntimeError: boom at import"),
        ("import no_such_module_here", "cannot import it: ModuleNotFoundError"),
        ("app = 3", "broken_app.app is a int, not a TaskhubApp"),
        ("x = 1", "broken_app.app is nothing, not a TaskhubApp"),
        (
            "from backend.declare.registry import TaskBlueprint\n"
            "b = TaskBlueprint()\n"
            "@b.task(name='a.b', soft_time_limit=5, time_limit=5)\n"
            "def f() -> None: ...\n",
            "cannot import it: ValueError: task 'a.b': soft_time_limit (5 s) must be below",
        ),
    ],
)
def test_an_app_that_cannot_load_names_itself_and_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, message: str
) -> None:
    name = f"broken_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AppError) as caught:
        load_apps(load_settings(apps=name))
    assert str(caught.value).startswith(f"app {name}: ")
    assert message.replace("broken_app", name) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_task_declared_by_two_apps_stops_the_start() -> None:
    first = TaskhubApp(name="first", blueprints=[blueprint_with("shared.task")])
    second = TaskhubApp(name="second", blueprints=[blueprint_with("shared.task")])
    with pytest.raises(
        AppError, match=r"app second: task 'shared\.task' is already declared by app"
    ):
        check_apps([first, second], {})
    builtin_twin = TaskhubApp(name="twin", blueprints=[blueprint_with("taskhub.ping")])
    with pytest.raises(AppError, match="already declared by app taskhub"):
        load_apps(load_settings(), [builtin_twin])


def test_two_apps_of_one_name_or_one_blueprint_in_two_apps_stop_the_start() -> None:
    shared = blueprint_with("x.one")
    with pytest.raises(AppError, match="two apps are named 'dup'"):
        check_apps([TaskhubApp(name="dup"), TaskhubApp(name="dup")], {})
    with pytest.raises(AppError, match="already belongs to app a"):
        check_apps(
            [TaskhubApp(name="a", blueprints=[shared]), TaskhubApp(name="b", blueprints=[shared])],
            {},
        )


def test_app_names_are_identifiers() -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        TaskhubApp(name="Acme-Jobs")


def test_a_migrations_folder_needs_versions(tmp_path: Path) -> None:
    with pytest.raises(AppError, match="has no versions/"):
        check_apps([TaskhubApp(name="acme", migrations=tmp_path)], {})


def test_defaults_fill_what_a_task_leaves_unset() -> None:
    blueprint = TaskBlueprint()

    @blueprint.task(name="d.plain")
    def plain() -> None: ...

    @blueprint.task(
        name="d.own", queue="mine", time_limit=10, soft_time_limit=False, rate_limit=False
    )
    def own() -> None: ...

    app = TaskhubApp(
        name="d",
        blueprints=[blueprint],
        defaults=TaskDefaults(
            queue="app", retry=3, time_limit=600, soft_time_limit=500, rate_limit="5/s"
        ),
    )
    assert (plain.queue, plain.time_limit) == ("default", None), "before loading: taskhub's"
    check_apps([app], {})
    assert (plain.queue, plain.time_limit, plain.soft_time_limit) == ("app", 600, 500)
    assert isinstance(plain.retry, RetryStrategy)
    assert plain.retry.max_attempts == 3
    assert plain.rate_limit == RateLimit.parse("5/s")
    assert (own.queue, own.time_limit, own.soft_time_limit, own.rate_limit) == (
        "mine",
        10,
        None,
        None,
    )


def test_operators_replace_an_app_defaults() -> None:
    blueprint = blueprint_with("o.task")
    app = TaskhubApp(name="o", blueprints=[blueprint], defaults=TaskDefaults(time_limit=600))
    settings = load_settings(
        task_defaults='{"o": {"time_limit": 1800}, "*": {"queue": "everyone", "time_limit": 5}}'
    )
    apps = check_apps([app], settings.task_defaults_overrides())
    assert (apps.task("o.task").queue, apps.task("o.task").time_limit) == ("everyone", 1800)


def test_defaults_that_make_a_task_invalid_stop_the_start_and_change_nothing() -> None:
    blueprint = TaskBlueprint()

    @blueprint.task(name="v.short", time_limit=30)
    def short() -> None: ...

    app = TaskhubApp(name="v", blueprints=[blueprint], defaults=TaskDefaults(soft_time_limit=60))
    with pytest.raises(AppError, match=r"app v: task 'v.short': soft_time_limit \(60 s\)"):
        check_apps([app], {})
    assert short.soft_time_limit is None, "the blueprint keeps its earlier defaults"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "is not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"a": {"time_limit": -1}}', "a: time_limit must be a number of seconds above 0"),
        ('{"a": {"colour": "red"}}', "a.colour: Extra inputs are not permitted"),
        ('{"a": {"rate_limit": "lots"}}', "a: "),
    ],
)
def test_invalid_task_defaults_setting_is_one_line(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match="invalid setting TASKHUB_TASK_DEFAULTS=") as caught:
        load_settings(task_defaults=value)
    assert message in str(caught.value)


class AcmeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACME_")

    crm_url: str
    crm_token: SecretStr
    page_size: int = 100


def test_app_settings_are_read_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_CRM_URL", "http://crm.test")
    monkeypatch.setenv("ACME_CRM_TOKEN", "s3cret")
    apps = check_apps([TaskhubApp(name="acme", settings=[AcmeSettings])], {})
    assert apps.settings_of(AcmeSettings).crm_url == "http://crm.test"
    monkeypatch.setenv("ACME_PAGE_SIZE", "many")
    with pytest.raises(AppError, match=r"^app acme: invalid setting ACME_PAGE_SIZE='many': "):
        check_apps([TaskhubApp(name="acme", settings=[AcmeSettings])], {})


def test_an_invalid_secret_setting_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACME_CRM_URL", "http://crm.test")
    monkeypatch.delenv("ACME_CRM_TOKEN", raising=False)
    with pytest.raises(AppError, match="ACME_CRM_TOKEN=<hidden>: Field required"):
        check_apps([TaskhubApp(name="acme", settings=[AcmeSettings])], {})


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--app", "a.b"],
        ["worker", "--app", "a.b"],
        ["api", "--app", "a.b"],
        ["migrate", "--app", "a.b"],
        ["defer", "taskhub.ping", "--app", "a.b"],
        ["jobs", "list", "--app", "a.b"],
        ["queues", "pause", "q", "--app", "a.b"],
        ["schedules", "--app", "a.b"],
        ["backups", "--app", "a.b"],
    ],
)
def test_every_command_takes_app(argv: list[str]) -> None:
    args = cli.build_parser().parse_args([*argv, "--app", "c.d"])
    assert args.apps == ["a.b", "c.d"]


def test_app_option_adds_to_taskhub_apps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKHUB_APPS", "from.env")
    args = cli.build_parser().parse_args(["worker", "--app", "from.option"])
    assert cli._settings_for(args).apps == ["from.env", "from.option"]
