"""Twin databases for differential tests: the same steps on two clones, then every row and
every NOTIFY compared.

Used to hold taskhub's set-wise statements to procrastinate's per-row functions and triggers
(test_setwise_finish.py, test_setwise_defer.py). Timestamps taken from the clock are compared
by their rank among all of the database's timestamps (the two runs happen at different times);
ids, statuses, attempts, worker ids and everything else exactly. Events are compared per job,
in each job's order, and their ids as a set: the per-row way fires triggers row by row where a
set-wise statement fires them for all rows at once, so different jobs' events, which share one
transaction's timestamp and commit together, interleave differently. NOTIFYs are compared as a
multiset: a transaction's notifications are delivered together at its commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

Connection = psycopg.AsyncConnection[dict[str, Any]]

TABLES = (
    "procrastinate_jobs",
    "procrastinate_events",
    "procrastinate_workers",
    "procrastinate_periodic_defers",
    "taskhub.job_results",
    "taskhub.job_errors",
    "taskhub.job_progress",
    "taskhub.audit_log",
)
ORDER = {
    "taskhub.job_results": "job_id",
    "taskhub.job_progress": "job_id",
    "procrastinate_events": "job_id, id",
}


@dataclass(frozen=True)
class World:
    """What one database holds after the steps: rows per table, NOTIFYs, what the steps
    returned."""

    returned: list[Any]
    tables: dict[str, list[dict[str, Any]]]
    notifies: list[tuple[str, str]] = field(default_factory=list)


def rank_clock(
    tables: dict[str, list[dict[str, Any]]], fixed: Iterable[dt.datetime] = ()
) -> dict[str, list[dict[str, Any]]]:
    """Every timestamp replaced by its rank among all the timestamps of the database; the
    ``fixed`` ones (given by the test, not read from the clock) stay themselves."""
    keep = set(fixed)
    stamps = sorted(
        {
            value
            for rows in tables.values()
            for row in rows
            for value in row.values()
            if isinstance(value, dt.datetime) and value not in keep
        }
    )
    rank = {stamp: f"t{index}" for index, stamp in enumerate(stamps)}
    return {
        table: [
            {
                key: rank.get(value, value) if isinstance(value, dt.datetime) else value
                for key, value in row.items()
            }
            for row in rows
        ]
        for table, rows in tables.items()
    }


async def snapshot(
    conn: Connection, fixed: Iterable[dt.datetime] = ()
) -> dict[str, list[dict[str, Any]]]:
    """Every row of the compared tables, events per job with their ids apart (see above)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in TABLES:
        schema, _, name = table.rpartition(".")
        query = sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(*([schema] if schema else []), name),
            sql.SQL(ORDER.get(table, "id")),
        )
        cursor = await conn.execute(query)
        tables[table] = await cursor.fetchall()
    events = tables["procrastinate_events"]
    tables["procrastinate_events ids"] = [{"id": n} for n in sorted(e.pop("id") for e in events)]
    return rank_clock(tables, fixed)


async def run_world(
    url: str,
    steps: Callable[[Connection], Awaitable[list[Any]]],
    channels: Iterable[str],
    fixed: Iterable[dt.datetime] = (),
) -> World:
    """Run ``steps`` on a connection to ``url`` while listening on ``channels``."""
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as listener,
    ):
        for channel in channels:
            await listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        returned = await steps(conn)
        notifies: list[tuple[str, str]] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                async for notify in listener.notifies():
                    notifies.append((notify.channel, notify.payload))
        return World(returned, await snapshot(conn, fixed), notifies)


def differences(reference: World, candidate: World) -> list[str]:
    """What differs, in words; empty when the two worlds are the same."""
    found: list[str] = []
    if reference.returned != candidate.returned:
        found.append(f"returned {reference.returned} != {candidate.returned}")
    for table in reference.tables:
        want, got = reference.tables[table], candidate.tables[table]
        if len(want) != len(got):
            found.append(f"{table}: {len(want)} rows != {len(got)}")
        for row_want, row_got in zip(want, got, strict=False):
            if row_want != row_got:
                found.append(f"{table}: {row_want} != {row_got}")
    if sorted(reference.notifies) != sorted(candidate.notifies):
        found.append(f"NOTIFY {reference.notifies} != {candidate.notifies}")
    return found
