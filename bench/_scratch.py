import asyncio
import statistics
import time
from typing import Any

import procrastinate
from procrastinate.schema import SchemaManager
from psycopg import AsyncConnection

from backend import queue
from backend.tasks.builtin import ping

URL = "postgresql://postgres@127.0.0.1:5432/scratch_bench"


async def noop(message: Any = None, sleep: float = 0) -> Any:
    return message


async def main() -> None:
    async with await AsyncConnection.connect(
        "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
    ) as a:
        await a.execute("DROP DATABASE IF EXISTS scratch_bench WITH (FORCE)")
        await a.execute("CREATE DATABASE scratch_bench")
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=URL, min_size=1, max_size=10)
    )
    task = app.task(name="bench.noop")(noop)
    async with app.open_async():
        await SchemaManager(app.connector).apply_schema_async()
        async with await AsyncConnection.connect(URL, autocommit=True) as conn:
            for rnd in range(4):
                for name in ("taskhub", "bare", "bare_pool"):
                    ts = []
                    for i in range(200):
                        t = time.perf_counter()
                        if name == "bare_pool":
                            await task.defer_async(message=i, sleep=0)
                        else:
                            async with conn.transaction():
                                if name == "taskhub":
                                    await queue.defer(conn, ping, {"message": i})
                                else:
                                    await task.configure(connection=conn).defer_async(
                                        message=i, sleep=0
                                    )
                        ts.append((time.perf_counter() - t) * 1000)
                    print(
                        rnd,
                        name,
                        f"median {statistics.median(ts):.3f} ms mean {statistics.mean(ts):.3f}",
                        flush=True,
                    )


asyncio.run(main())
