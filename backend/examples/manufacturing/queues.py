"""The seed's fifteen queues and their tiers, exactly as its Celery routing had them.

A task's priority is its queue's: procrastinate runs higher first within the queues a worker
serves, and each tier gets its own worker pool (``POOLS``), as the seed ran one Celery worker
per tier.
"""

from __future__ import annotations

from typing import Final

#: queue -> priority (critical 10, high 7 to 9, normal 5 to 6, low 1 to 4).
QUEUES: Final[dict[str, int]] = {
    "payment.critical": 10,
    "order.critical": 10,
    "monitoring.critical": 10,
    "email.urgent": 9,
    "analytics.realtime": 8,
    "email.normal": 6,
    "order.normal": 6,
    "payment.normal": 6,
    "sync.normal": 5,
    "monitoring.normal": 5,
    "email.bulk": 3,
    "analytics.batch": 2,
    "payment.batch": 2,
    "sync.maintenance": 1,
    "sync.backup": 1,
}

#: Worker pools per tier: `taskhub worker --queues ... --concurrency N`, one per tier.
POOLS: Final[dict[str, tuple[tuple[str, ...], int]]] = {
    "critical": (("payment.critical", "order.critical", "monitoring.critical"), 4),
    "high": (("email.urgent", "analytics.realtime"), 4),
    "normal": (
        ("email.normal", "order.normal", "payment.normal", "sync.normal", "monitoring.normal"),
        8,
    ),
    "low": (
        ("email.bulk", "analytics.batch", "payment.batch", "sync.maintenance", "sync.backup"),
        2,
    ),
}


def priority(queue: str) -> int:
    """The seed's priority for a queue (a KeyError names an unknown queue)."""
    return QUEUES[queue]
