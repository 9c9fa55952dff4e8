"""Flask's application context for tasks: ``current_app``, config and extensions in a job.

A worker is not a request: nothing pushes an app context for it. :func:`app_context` builds
the app from the team's own factory once per process and pushes ``app.app_context()``
around each run. A forked child (a sync task with ``time_limit``) builds its own app: the
worker's database connections are closed in the child, so its app's pools cannot be reused.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask

__all__ = ["app_context", "flask_app", "forget_apps"]

F = TypeVar("F", bound=Callable[..., Any])

_apps: dict[tuple[Callable[[], Flask], int], Flask] = {}
_building = threading.Lock()


def flask_app(factory: Callable[[], Flask]) -> Flask:
    """The app ``factory`` built in this process, built on first use (thread-safe)."""
    key = (factory, os.getpid())
    with _building:
        if key not in _apps:
            _apps[key] = factory()
        return _apps[key]


def forget_apps() -> None:
    """Build every app anew on next use: for tests whose factory reads per-test settings."""
    with _building:
        _apps.clear()


def app_context(factory: Callable[[], Flask]) -> Callable[[F], F]:
    """Run the decorated task (sync or async) inside the app's context.

    Put it under ``@blueprint.task(...)``; the task's signature is kept, so its arguments
    model and ``TaskContext`` are read as usual.
    """

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with flask_app(factory).app_context():
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with flask_app(factory).app_context():
                return func(*args, **kwargs)

        return cast(F, run)

    return decorate
