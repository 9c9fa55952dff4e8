"""taskhub's error hierarchy: each error carries the message a user sees and an HTTP status."""

from __future__ import annotations

from typing import Any


class TaskhubError(Exception):
    """Base of every error taskhub raises on purpose."""

    status_code = 500
    #: ``taskhub`` exits with 2 for errors in what the user gave, 1 for the rest.
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingsError(TaskhubError):
    """A setting is missing or invalid; the message names the environment variable."""

    exit_code = 2


#: Seconds a client is told to wait (``Retry-After``) when the database is down: a restart or a
#: failover usually takes that long, and clients that retry at once only add to the load.
RETRY_AFTER_DATABASE = 5


class DatabaseUnavailable(TaskhubError):
    """The database cannot be reached."""

    status_code = 503
    headers = {"Retry-After": str(RETRY_AFTER_DATABASE)}


class NotMigrated(TaskhubError):
    """The database exists but its schema is not migrated."""

    status_code = 503


class UnknownTask(TaskhubError):
    """No task is registered under that name."""

    status_code = 404
    exit_code = 2


class InvalidJobArguments(TaskhubError):
    """The job arguments do not match the task's model."""

    status_code = 422
    exit_code = 2

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


class JobNotFound(TaskhubError):
    """No job has that id (it never existed, or it was pruned)."""

    status_code = 404
    exit_code = 2


class AlreadyQueued(TaskhubError):
    """A job with the same queueing lock is already waiting."""

    status_code = 409


class EmbeddedServerError(TaskhubError):
    """The embedded PostgreSQL server could not be started."""
