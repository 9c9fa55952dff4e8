"""GET /backups: the runs taskhub.backups records, for operators and dashboards."""

from __future__ import annotations

import datetime
from pathlib import Path

import httpx

from backend.api import create_app
from backend.db import DictConnection
from backend.settings import Settings
from tests.integration.conftest import running_api
from tests.integration.test_backups import insert_backup

START = datetime.datetime(2026, 3, 1, 3, 0, tzinfo=datetime.UTC)


async def test_backups_newest_first_with_filters(
    settings: Settings, db_url: str, conn: DictConnection, tmp_path: Path
) -> None:
    ids = [
        await insert_backup(conn, tmp_path, START + datetime.timedelta(days=day), status)
        for day, status in enumerate(["succeeded", "failed", "succeeded"])
    ]
    await conn.commit()
    async with running_api(create_app(settings, db_url)) as client:
        everything = await client.get("/backups")
        failed = await client.get("/backups", params={"status": "failed"})
        one = await client.get("/backups", params={"limit": 1})
        too_many = await client.get("/backups", params={"limit": 501})
        async with httpx.AsyncClient(
            transport=client._transport, base_url="http://taskhub"
        ) as anonymous:
            unauthenticated = await anonymous.get("/backups")
    assert everything.status_code == 200, everything.text
    assert [run["id"] for run in everything.json()] == ids[::-1]
    assert everything.json()[0]["path"].endswith(".dump")
    assert [run["id"] for run in failed.json()] == [ids[1]]
    assert [run["id"] for run in one.json()] == [ids[2]]
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["loc"] == ["query", "limit"]
    assert unauthenticated.status_code == 401
