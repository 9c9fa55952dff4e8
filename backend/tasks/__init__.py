"""Task modules. Each declares its tasks on a blueprint; ``BLUEPRINTS`` lists them all."""

from __future__ import annotations

from backend.declare.registry import TaskBlueprint, TaskDefinition
from backend.tasks import backups, builtin, erp, hooks, maintenance, scheduling

BLUEPRINTS: tuple[TaskBlueprint, ...] = (
    builtin.blueprint,
    hooks.blueprint,
    maintenance.blueprint,
    backups.blueprint,
    erp.blueprint,
    scheduling.blueprint,
)


def all_tasks() -> dict[str, TaskDefinition]:  # type: ignore[type-arg]
    """Every declared task by name."""
    return {task.name: task for blueprint in BLUEPRINTS for task in blueprint}
