"""The email family's tasks."""

from __future__ import annotations

from backend.declare.registry import TaskBlueprint

blueprint = TaskBlueprint()
