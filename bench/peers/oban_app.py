"""oban (the Python port of Oban, free edition): one no-op worker class, as its docs have it.

Runs on Python >= 3.12 only: workers start from ``bench/.venv312`` (``bench/setup.sh``) through
oban's own CLI::

    PYTHONPATH=bench bench/.venv312/bin/oban start --dsn ... --queues default:10 \
        --log-level WARNING

``oban start`` imports this module when it first runs a ``peers.oban_app.Noop`` job (it
resolves the job's ``worker`` column by import path). ``bench/throughput.py`` installs the
schema with ``oban install`` (also from ``bench/.venv312``) and inserts jobs from Python 3.11
with the statement oban's own ``enqueue_many`` runs (see ``ObanSystem`` there). With
``probe`` (a UDP port) and ``token`` in its args, the job first sends
``"<token> <time.monotonic()>"`` to 127.0.0.1 (``bench/steady.py`` times pickups with it).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from oban import worker

WORKER = "peers.oban_app.Noop"  # oban's worker name: module and qualified class name

_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


@worker(queue="default")  # type: ignore[misc, untyped-decorator, unused-ignore]
class Noop:
    """Do nothing with the args: the figure is the queue's own cost per job."""

    async def process(self, job: Any) -> None:
        args = job.args
        if args.get("probe") is not None:
            message = f"{args.get('token')} {time.monotonic():.6f}"
            _udp.sendto(message.encode(), ("127.0.0.1", int(args["probe"])))
