"""procrastinate internals that taskhub uses outside the worker, gathered here so that a
procrastinate upgrade is checked in one folder (listed in docs/worker.md)."""

from __future__ import annotations

from procrastinate.manager import QUEUEING_LOCK_CONSTRAINT
from procrastinate.sql import parse_query_file

__all__ = ["QUEUEING_LOCK_CONSTRAINT", "parse_query_file"]
