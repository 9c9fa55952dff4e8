"""The manufacturing platform's monitoring: the seed's /monitoring API (``router.py``) on
taskhub's read model, its two periodic tasks (``tasks.py``: the health check every 2 minutes,
performance metrics every 5), and the configuration that makes the seed's alerts fire.

The seed alerted on five things; here each goes through taskhub's alerting (stored in
taskhub.alert_events, delivered by the alert webhooks) given ``ALERT_SETTINGS`` below
(``taskhub up --demo`` sets the critical queues; the backlog threshold is the default):

- critical task failures: rule ``critical_failure``, a job failing for good on a queue of
  ``TASKHUB_CRITICAL_QUEUES=payment.critical,order.critical,monitoring.critical``;
- queue backups (> 1000 tasks): rule ``backlog``, more than ``TASKHUB_ALERT_BACKLOG=1000``
  jobs due and waiting on one queue;
- worker failures: rule ``dead_worker``, no heartbeat for ``TASKHUB_RESCUE_AFTER`` seconds;
- system resource issues: ``system_resources`` (warning) raised by manufacturing.health_check
  when disk, load or memory goes over ``TASKHUB_MANUFACTURING_DISK_MAX_PERCENT`` (90),
  ``_LOAD_MAX_PER_CPU`` (4) or ``_MEMORY_MAX_PERCENT`` (95), once per episode;
- external service outages: ``external_service_down`` (error) raised by the health check when
  the mail server or the payment provider stops answering within
  ``TASKHUB_MANUFACTURING_HEALTH_TIMEOUT``, once per outage; ``external_service_recovered``
  (info) when it answers again.

The rules are evaluated by taskhub's periodic alert evaluation
(``backend.control.alert_rules.evaluate``); the health check raises its own with
``raise_alert``. The database has no alert of its own here: without it no task can record
anything, so its outage shows as dead workers and stalled schedules.
"""

from __future__ import annotations

from typing import Final

#: The taskhub settings the example expects for the seed's alerts (environment names).
ALERT_SETTINGS: Final[dict[str, str]] = {
    "TASKHUB_CRITICAL_QUEUES": "payment.critical,order.critical,monitoring.critical",
    "TASKHUB_ALERT_BACKLOG": "1000",
}
