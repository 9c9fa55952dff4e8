"""Celery with Redis as the broker: one no-op task that counts itself in Redis.

Workers run through Celery's CLI with its default pool (prefork)::

    BENCH_REDIS_URL=redis://127.0.0.1:6379/11 PYTHONPATH=bench \
        celery -A peers.celery_app worker --pool prefork --concurrency 2

JSON only (no pickle) and no result backend: each run ``INCR``s a counter and sets the
message's bit in a bitmap, so the bench sees completions (the counter) and can prove each
job ran exactly once (counter == bitcount == jobs). That costs one Redis round trip per job,
about what storing a result in a Redis result backend would. With ``probe`` (a UDP port) and
``token`` in its argument, the task first sends ``"<token> <time.monotonic()>"`` to 127.0.0.1
(``bench/steady.py`` times pickups with it).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import redis
from celery import Celery

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
TASK_NAME = "bench.noop"
DONE_KEY = "bench:done"  # INCR per run
SEEN_KEY = "bench:seen"  # SETBIT message 1 per run

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)

# redis-py resets its pool in a forked child, so each prefork child gets its own connection.
counter = redis.Redis.from_url(REDIS_URL)
_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@app.task(name=TASK_NAME)  # type: ignore[untyped-decorator, unused-ignore]
def noop(payload: dict[str, Any]) -> None:
    """Record this run (and which message it was); otherwise do nothing."""
    if payload.get("probe") is not None:
        message = f"{payload.get('token')} {time.monotonic():.6f}"
        _udp.sendto(message.encode(), ("127.0.0.1", int(payload["probe"])))
    pipe = counter.pipeline(transaction=False)
    pipe.incr(DONE_KEY)
    pipe.setbit(SEEN_KEY, int(payload["message"]), 1)
    pipe.execute()
