"""taskhub's own tasks, loaded in every process as the app named ``taskhub``."""

from __future__ import annotations

from backend.declare.apps import TaskhubApp
from backend.tasks import alerts, backups, builtin, hooks, maintenance, stats

app = TaskhubApp(
    name="taskhub",
    blueprints=(
        builtin.blueprint,
        hooks.blueprint,
        maintenance.blueprint,
        backups.blueprint,
        alerts.blueprint,
        stats.blueprint,
    ),
    description=(
        "Built-in tasks: ping, failure hooks, pruning and rescue, backups, alerts, statistics."
    ),
)
