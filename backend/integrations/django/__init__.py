"""Django's task framework on taskhub: ``TASKS = {"default": {"BACKEND":
"backend.integrations.django.TaskhubBackend", ...}}``; see docs/django.md.

Importing this package does not import Django's models: settings may name the backend before
Django is set up.
"""

from __future__ import annotations

from backend.integrations.django.backend import (
    ArgumentsNotJSON,
    TaskhubBackend,
    TaskhubTask,
    TaskhubTaskContext,
    TaskhubTaskResult,
)

__all__ = [
    "ArgumentsNotJSON",
    "TaskhubBackend",
    "TaskhubTask",
    "TaskhubTaskContext",
    "TaskhubTaskResult",
]
