"""chancy: a ``Chancy`` app with its default plugins and one no-op job, as its docs have it.

Workers run through chancy's own CLI, with its defaults::

    DATABASE_URL=... PYTHONPATH=bench chancy --app peers.chancy_app.app worker start

``chancy worker start`` declares the queue ``default`` with chancy's defaults (``Queue("default")``:
the process-pool executor, concurrency = the machine's CPU count per worker, polling every 5 s,
woken early by the ``queue.pushed`` notification of every push) unless the database already
has it. The only departure from the defaults is the logger: WARNING, as for the other systems,
instead of chancy's INFO line per job pulled. ``bench/throughput.py`` applies the schema with
``Chancy.migrate()`` and pushes jobs through ``Chancy.push_many_ex`` (many jobs on one cursor,
in the caller's transaction). With ``probe`` (a UDP port) and ``token``, the job first sends
``"<token> <time.monotonic()>"`` to 127.0.0.1 (``bench/steady.py`` times pickups with it).
"""

from __future__ import annotations

import logging
import os
import socket
import time

from chancy import Chancy, Job

QUEUE = "default"
FUNC = "peers.chancy_app.noop"  # the job's importable name, as Job.from_func gives it

_log = logging.getLogger("chancy.bench")
_log.setLevel(logging.WARNING)
_log.addHandler(logging.StreamHandler())

app = Chancy(os.environ.get("DATABASE_URL", ""), log=_log)

_udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def noop(message: int | None = None, probe: int | None = None, token: int | None = None) -> None:
    """Do nothing: the figure is the queue's own cost per job."""
    if probe is not None:
        _udp.sendto(f"{token} {time.monotonic():.6f}".encode(), ("127.0.0.1", probe))


def job(kwargs: dict[str, object]) -> Job:
    """One ``noop`` job for the queue ``default`` (chancy's defaults otherwise)."""
    return Job(func=FUNC, queue=QUEUE, kwargs=kwargs)
