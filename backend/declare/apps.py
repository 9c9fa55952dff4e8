"""Apps: a team's own tasks, routers, settings and migrations, loaded by module name.

An app is an importable module with one :class:`TaskhubApp`, as ``celery -A proj`` loads a
project's Celery app::

    # proj/jobs.py
    blueprint = TaskBlueprint()

    @blueprint.task(name="proj.send_invoice")
    def send_invoice(args: InvoiceArgs) -> None: ...

    app = TaskhubApp(name="proj", blueprints=[blueprint], routers=[router],
                     migrations=Path(__file__).parent / "migrations")

``TASKHUB_APPS=proj.jobs`` or ``--app proj.jobs`` loads it; ``module:attribute`` names
another attribute than ``app``. taskhub's own tasks are an app too, always loaded first.
Loading validates everything before anything starts: an app that cannot be imported,
declares a task name twice, or has invalid settings stops the start with one line.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from backend.declare.policy import TaskDefaults
from backend.declare.registry import TaskBlueprint, TaskDefinition
from backend.errors import SettingsError, TaskhubError, UnknownTask

if TYPE_CHECKING:
    from fastapi import APIRouter

    from backend.settings import Settings

BUILTIN_APP = "backend.tasks"
APP_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class AppError(TaskhubError):
    """An app could not be loaded; the message names the app and the problem."""


@dataclass(frozen=True, kw_only=True)
class TaskhubApp:
    """What an app brings. Only ``name`` is required.

    ``name`` labels the app (lower case, digits, ``_``): it names its migrations' version
    table (``alembic_version_<name>``) and its entry in ``TASKHUB_TASK_DEFAULTS``.
    ``migrations`` is a folder of alembic revisions (``versions/*.py``), run by ``taskhub
    migrate`` only while the app is enabled. ``settings`` classes are read and validated
    at start (tasks get them with ``ctx.settings_of(Class)``, routers with
    ``app_settings(request, Class)``). ``defaults`` fill what its tasks leave unset.
    """

    name: str
    blueprints: Sequence[TaskBlueprint] = ()
    routers: Sequence[APIRouter] = ()
    settings: Sequence[type[BaseSettings]] = ()
    migrations: Path | None = None
    defaults: TaskDefaults = field(default_factory=TaskDefaults)
    description: str = ""

    def __post_init__(self) -> None:
        if not APP_NAME_PATTERN.match(self.name):
            raise ValueError(
                f"app name {self.name!r}: use lower-case letters, digits and _ (at most 40), "
                "starting with a letter"
            )

    @property
    def version_table(self) -> str:
        """The table alembic records this app's schema revision in."""
        return f"alembic_version_{self.name}"


@dataclass(frozen=True)
class LoadedApps:
    """The apps a process serves, taskhub's own first: every task, router and setting."""

    apps: tuple[TaskhubApp, ...]
    tasks: Mapping[str, TaskDefinition[Any]]
    settings: Mapping[type[BaseSettings], BaseSettings]

    @property
    def blueprints(self) -> tuple[TaskBlueprint, ...]:
        return tuple(blueprint for app in self.apps for blueprint in app.blueprints)

    @property
    def routers(self) -> Iterator[APIRouter]:
        for app in self.apps:
            yield from app.routers

    def task(self, name: str) -> TaskDefinition[Any]:
        """A task by name; :class:`UnknownTask` lists the known ones."""
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks))
            raise UnknownTask(f"unknown task {name!r}; registered tasks: {known}") from None

    def mask_args(self, task_name: str, args: dict[str, Any]) -> dict[str, Any]:
        """A job's arguments as shown outside the database: the task's secrets masked."""
        definition = self.tasks.get(task_name)
        return definition.mask(args) if definition is not None else args

    def settings_of(self, kind: type[SettingsT]) -> SettingsT:
        """An app's settings as read at start (or now, for a class no app declared)."""
        found = self.settings.get(kind)
        return found if isinstance(found, kind) else load_app_settings(kind)


def load_app_settings(kind: type[SettingsT]) -> SettingsT:
    """An app's settings class read from the environment; one line naming the variable when
    a value is invalid."""
    try:
        return kind()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        prefix = str(kind.model_config.get("env_prefix") or "")
        variable = f"{prefix}{name}".upper()
        secret = "token" in name or "password" in name or "secret" in name
        value = "<hidden>" if secret else repr(first.get("input"))
        message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"invalid setting {variable}={value}: {message}") from None


def app_modules(settings: Settings, extra: Iterable[str] = ()) -> list[str]:
    """The modules to load: taskhub's own, TASKHUB_APPS, then ``extra``, each once."""
    names = [BUILTIN_APP, *settings.apps, *extra]
    return list(dict.fromkeys(name.strip() for name in names if name.strip()))


def import_app(spec: str) -> TaskhubApp:
    """``module`` (its ``app``) or ``module:attribute``, imported; AppError says what failed."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    # An app beside the caller's project, as `celery -A proj` finds it.
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AppError(f"app {spec}: cannot import it: {type(exc).__name__}: {exc}") from exc
    found = getattr(module, attribute, None)
    if not isinstance(found, TaskhubApp):
        what = "nothing" if found is None else f"a {type(found).__name__}"
        raise AppError(
            f"app {spec}: {module_name}.{attribute} is {what}, not a TaskhubApp "
            f"(declare `{attribute} = TaskhubApp(name=..., blueprints=[...])`)"
        )
    return found


def load_apps(
    settings: Settings,
    extra: Iterable[str | TaskhubApp] = (),
) -> LoadedApps:
    """Import and check every app, and bind their defaults; nothing half-loaded on error."""
    names = [item for item in extra if isinstance(item, str)]
    apps = [import_app(spec) for spec in app_modules(settings, names)]
    apps += [item for item in extra if isinstance(item, TaskhubApp)]
    return check_apps(apps, settings.task_defaults_overrides())


def check_apps(apps: Sequence[TaskhubApp], overrides: Mapping[str, TaskDefaults]) -> LoadedApps:
    """Refuse two apps of one name, a task declared twice, a blueprint in two apps, an invalid
    default or setting; then give each blueprint its app's resolved defaults."""
    unique: dict[str, TaskhubApp] = {}
    for app in apps:
        if unique.setdefault(app.name, app) is not app:
            raise AppError(f"app {app.name}: two apps are named {app.name!r}")
    owners: dict[int, str] = {}
    tasks: dict[str, TaskDefinition[Any]] = {}
    task_apps: dict[str, str] = {}
    bindings: list[tuple[TaskBlueprint, TaskDefaults]] = []
    for app in unique.values():
        operator = overrides.get(app.name, TaskDefaults()).over(overrides.get("*", TaskDefaults()))
        defaults = operator.over(app.defaults)
        for blueprint in app.blueprints:
            if owners.setdefault(id(blueprint), app.name) != app.name:
                raise AppError(
                    f"app {app.name}: a blueprint of it already belongs to app "
                    f"{owners[id(blueprint)]}"
                )
            bindings.append((blueprint, defaults))
            for definition in blueprint:
                if definition.name in tasks:
                    raise AppError(
                        f"app {app.name}: task {definition.name!r} is already declared by "
                        f"app {task_apps[definition.name]}"
                    )
                tasks[definition.name] = definition
                task_apps[definition.name] = app.name
        if app.migrations is not None and not (app.migrations / "versions").is_dir():
            raise AppError(
                f"app {app.name}: its migrations folder {app.migrations} has no versions/"
            )
    loaded_settings: dict[type[BaseSettings], BaseSettings] = {}
    for app in unique.values():
        for kind in app.settings:
            try:
                loaded_settings[kind] = load_app_settings(kind)
            except SettingsError as exc:
                raise AppError(f"app {app.name}: {exc}") from None
    previous = [(blueprint, blueprint.defaults) for blueprint, _ in bindings]
    try:
        for blueprint, defaults in bindings:
            blueprint.defaults = defaults
        for name, definition in tasks.items():
            try:
                definition.check_limits()
            except ValueError as exc:
                raise AppError(f"app {task_apps[name]}: {exc}") from None
    except AppError:
        for blueprint, defaults in previous:
            blueprint.defaults = defaults
        raise
    return LoadedApps(
        apps=tuple(unique.values()),
        tasks=tasks,
        settings=loaded_settings,
    )


@functools.cache
def builtin_apps() -> LoadedApps:
    """taskhub's own tasks alone, with no settings read: for tools and tests."""
    return check_apps([import_app(BUILTIN_APP)], {})
