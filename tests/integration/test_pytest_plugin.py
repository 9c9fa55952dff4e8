"""taskhub's pytest plugin as a user's project sees it: its tests run in a subprocess
(pytester) against the real PostgreSQL, with an app of their own (tasks and a migration)."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

SHOP_APP = """
from pathlib import Path

from pydantic import BaseModel

from backend.declare.apps import TaskhubApp
from backend.declare.registry import TaskBlueprint
from backend.defer import defer
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()


class OrderArgs(BaseModel):
    order_id: int


@blueprint.task(name="shop.confirm")
async def confirm(args: OrderArgs, ctx: TaskContext) -> dict[str, int]:
    async with ctx.connection() as conn:
        await conn.execute(
            "UPDATE shop_orders SET confirmed = true WHERE id = %(id)s", {"id": args.order_id}
        )
        await defer(conn, receipt, {"order_id": args.order_id})
    ctx.progress(done=1, total=1)
    return {"confirmed": args.order_id}


@blueprint.task(name="shop.receipt", queue="mail")
def receipt(args: OrderArgs) -> str:
    if args.order_id == 13:
        raise ValueError("no receipt for order 13")
    return f"receipt {args.order_id}"


app = TaskhubApp(
    name="shop", blueprints=[blueprint], migrations=Path(__file__).parent / "migrations"
)
"""

SHOP_MIGRATION = """
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE shop_orders (id int PRIMARY KEY, confirmed bool NOT NULL DEFAULT false)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE shop_orders")
"""

SHOP_TESTS = """
import psycopg
import pytest

from backend.defer import defer_sync
from backend.testing import run_task
from shop.jobs import confirm


def rows(url, query):
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def test_deferred_jobs_run_with_a_worker(taskhub_database_url, taskhub_run_jobs):
    with psycopg.connect(taskhub_database_url) as conn:
        conn.execute("INSERT INTO shop_orders (id) VALUES (1), (13)")
        defer_sync(conn, confirm, {"order_id": 1})
        defer_sync(conn, confirm, {"order_id": 13})
    outcomes = taskhub_run_jobs()
    assert sorted(((o.task, o.status, o.result, o.error) for o in outcomes), key=repr) == [
        ("shop.confirm", "succeeded", {"confirmed": 13}, None),
        ("shop.confirm", "succeeded", {"confirmed": 1}, None),
        ("shop.receipt", "failed", None, "ValueError: no receipt for order 13"),
        ("shop.receipt", "succeeded", "receipt 1", None),
    ]
    assert outcomes[0].view.progress.done == 1
    assert rows(taskhub_database_url, "SELECT id FROM shop_orders WHERE confirmed ORDER BY id") == [
        (1,), (13,)
    ]
    assert taskhub_run_jobs() == []


def test_only_the_queues_asked_for_run(taskhub_database_url, taskhub_run_jobs):
    with psycopg.connect(taskhub_database_url) as conn:
        conn.execute("INSERT INTO shop_orders (id) VALUES (2)")
        defer_sync(conn, confirm, {"order_id": 2})
    assert [o.task for o in taskhub_run_jobs(queues=["default"])] == ["shop.confirm"]
    assert [o.result for o in taskhub_run_jobs(queues=["mail"])] == ["receipt 2"]


def test_a_rolled_back_job_never_runs(taskhub_database_url, taskhub_run_jobs):
    with psycopg.connect(taskhub_database_url) as conn:
        defer_sync(conn, confirm, {"order_id": 1})
        conn.rollback()
    assert taskhub_run_jobs() == []


def test_each_test_has_a_fresh_database(taskhub_database_url):
    assert rows(taskhub_database_url, "SELECT count(*) FROM shop_orders") == [(0,)]
    assert rows(taskhub_database_url, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]


def test_run_task_on_the_test_database(taskhub_database_url, taskhub_run_jobs):
    with psycopg.connect(taskhub_database_url) as conn:
        conn.execute("INSERT INTO shop_orders (id) VALUES (5)")
    run = run_task(confirm, {"order_id": 5}, connection_url=taskhub_database_url)
    assert (run.result, run.progress[-1].done) == ({"confirmed": 5}, 1)
    assert [(o.task, o.result) for o in taskhub_run_jobs()] == [("shop.receipt", "receipt 5")]


@pytest.mark.asyncio
async def test_async_tests_await_arun(taskhub_database_url, taskhub_run_jobs):
    with psycopg.connect(taskhub_database_url) as conn:
        conn.execute("INSERT INTO shop_orders (id) VALUES (3)")
        defer_sync(conn, confirm, {"order_id": 3})
    assert len(await taskhub_run_jobs.arun()) == 2


@pytest.mark.taskhub_apps()
def test_a_marker_names_other_apps(taskhub_database_url, taskhub_apps):
    assert taskhub_apps == ()
    assert rows(taskhub_database_url, "SELECT to_regclass('shop_orders') IS NULL") == [(True,)]
"""


def write_shop(pytester: pytest.Pytester) -> None:
    pytester.mkpydir("shop")
    pytester.path.joinpath("shop", "jobs.py").write_text(SHOP_APP)
    versions = pytester.path / "shop" / "migrations" / "versions"
    versions.mkdir(parents=True)
    versions.joinpath("0001_shop.py").write_text(SHOP_MIGRATION)
    pytester.makeini(
        "[pytest]\ntaskhub_apps = shop.jobs\nasyncio_default_fixture_loop_scope = function\n"
    )


def test_the_plugin_is_registered_for_pytest() -> None:
    [plugin] = [entry for entry in entry_points(group="pytest11") if entry.name == "taskhub"]
    assert plugin.value == "backend.testing.pytest_plugin"


def test_a_user_s_tests_get_a_migrated_database_and_run_their_jobs(
    pytester: pytest.Pytester, admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKHUB_TEST_DATABASE_URL", admin_url)
    write_shop(pytester)
    pytester.makepyfile(test_shop=SHOP_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=170)
    result.assert_outcomes(passed=7)


def test_tests_that_ask_for_no_fixture_never_reach_a_database(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKHUB_TEST_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    write_shop(pytester)
    pytester.makepyfile(test_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_an_app_that_cannot_be_imported_errors_the_test_with_the_reason(
    pytester: pytest.Pytester, admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template is made when a test asks for it: its failure is that test's error."""
    monkeypatch.setenv("TASKHUB_TEST_DATABASE_URL", admin_url)
    write_shop(pytester)
    pytester.makepyfile(
        test_wrong="""
import pytest

@pytest.mark.taskhub_apps("shop.missing")
def test_unknown_app(taskhub_database_url):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*app shop.missing: cannot import it*"])
