"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
`taskhub up` (API, worker, schedules) on a real database, with an app of test tasks.

Each page's screenshot is saved in test-artifacts/dashboard/; with TASKHUB_SCREENSHOTS=<dir>,
the README's two images (dashboard-overview.png, dashboard-job.png) are written there too."""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from backend.dashboard import pages
from tests.conftest import create_database, drop_database
from tests.e2e.conftest import TaskhubProcess, clean_env, free_port, job_row, wait_status

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPERATE = "browser-operate-token-0123456789"
READ = "browser-read-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"

APP = '''
"""Tasks for the dashboard's browser tests (loaded with --app browserapp.jobs)."""

import time
from pathlib import Path

from pydantic import BaseModel

from backend.declare.apps import TaskhubApp
from backend.declare.registry import TaskBlueprint
from backend.runtime.context import TaskContext

blueprint = TaskBlueprint()


class Steps(BaseModel):
    steps: int = 8
    pause: float = 0.7


@blueprint.task(name="browser.steps", queue="reports")
def steps(args: Steps, ctx: TaskContext) -> int:
    """Count to `steps`, reporting each one."""
    for done in range(1, args.steps + 1):
        time.sleep(args.pause)
        ctx.progress(done=done, total=args.steps, message=f"step {done} of {args.steps}")
    return args.steps


class Flaky(BaseModel):
    marker: str


@blueprint.task(name="browser.flaky", queue="default", retry=False)
def flaky(args: Flaky) -> str:
    """Fail until the marker file exists."""
    if not Path(args.marker).exists():
        raise ConnectionError("the ERP answered 503")
    return "recovered"


class Nothing(BaseModel):
    pass


@blueprint.task(name="browser.quick", queue="quiet")
def quick(args: Nothing) -> str:
    """Return at once."""
    return "done"


app = TaskhubApp(name="browserapp", blueprints=[blueprint])
'''

#: Run on a job's page: record the progress bar's value and text each time they change, in
#: sessionStorage (which outlives a reload). The sampler lives in this document only, so what
#: it recorded moved without a reload.
WATCH_PROGRESS = """() => {
  window.__sameDocument = true;
  const seen = [];
  const sample = () => {
    const bar = document.getElementById('job-progress-bar');
    const value = bar.hasAttribute('value') ? bar.value : null;
    const text = document.getElementById('job-progress-text').textContent;
    const last = seen[seen.length - 1];
    if (!last || last.value !== value || last.text !== text) {
      seen.push({value, text});
      sessionStorage.setItem('progress-seen', JSON.stringify(seen));
    }
  };
  sample();
  setInterval(sample, 20);
}"""


class Server:
    def __init__(self, base: str, tmp: Path, url: str) -> None:
        self.base, self.tmp, self.url = base, tmp, url

    def dashboard(self, path: str = "/") -> str:
        return f"{self.base}/dashboard{path}"


def write_app(folder: Path) -> None:
    (folder / "browserapp").mkdir()
    (folder / "browserapp" / "__init__.py").write_text("")
    (folder / "browserapp" / "jobs.py").write_text(textwrap.dedent(APP))


@pytest.fixture(scope="module")
def server(
    admin_url: str, template_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One `taskhub up` for the module, with the test app and two tokens."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs Debian's chromium")
    tmp = tmp_path_factory.mktemp("browser")
    write_app(tmp)
    name = f"taskhub_browser_{os.getpid()}"
    url = create_database(admin_url, name, template=template_name)
    port = free_port()
    env = clean_env(
        DATABASE_URL=url,
        PYTHONPATH=str(tmp),
        TASKHUB_TOKENS=f"ops=operate:{OPERATE},viewer=read:{READ}",
        TASKHUB_DATA_DIR=str(tmp / ".taskhub"),
        TASKHUB_API_PORT=str(port),
        TASKHUB_WORKER_PROCESSES="1",
        TASKHUB_WORKER_CONCURRENCY="4",
    )
    process = TaskhubProcess(["up", "--app", "browserapp.jobs"], tmp, env)
    try:
        process.wait_for_line("taskhub is up", timeout=90)
        yield Server(f"http://127.0.0.1:{port}", tmp, url)
    finally:
        if process.process.poll() is None:
            process.stop()
        drop_database(admin_url, name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def login(browser: Browser, server: Server, token: str) -> Page:
    """A new browser context (its own cookies) logged in through the form."""
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(server.dashboard("/"))
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next="))
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    expect(page.locator("header.top")).to_be_visible()
    return page


def shoot(page: Page, name: str, *, readme: str | None = None) -> None:
    """A full-page screenshot in test-artifacts/dashboard/; with ``readme``, also the README's
    image of that name (the viewport only) in $TASKHUB_SCREENSHOTS when that is set."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    folder = os.environ.get("TASKHUB_SCREENSHOTS")
    if readme and folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{readme}.png"))


def finished(page: Page, status: str, timeout: float = 5_000) -> None:
    """The job page once its job has ended: the status shown, and the page reloaded by its live
    stream (a finished job's page has no stream), so the next navigation is not interrupted."""
    expect(page.locator("#job-status")).to_contain_text(status, timeout=timeout)
    expect(page.locator("body[data-live]")).to_have_count(0, timeout=timeout)


def defer_from_tasks_page(page: Page, server: Server, task: str, args: str) -> int:
    """The Tasks page's form: defer by hand, land on the job's page."""
    page.goto(server.dashboard("/tasks"))
    card = page.locator(f"details[id='task-{task}']")
    card.locator("summary").click()
    card.locator("textarea[name=args]").fill(args)
    card.get_by_role("button", name="Defer").click()
    expect(page).to_have_url(re.compile(r"/dashboard/jobs/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def progress_seen(page: Page) -> list[tuple[float, str]]:
    """What WATCH_PROGRESS recorded while the bar had a value: (value, text) in order."""
    seen = json.loads(page.evaluate("() => sessionStorage.getItem('progress-seen') || '[]'"))
    return [(sample["value"], sample["text"]) for sample in seen if sample["value"] is not None]


def audited(url: str) -> list[tuple[str, str, str | None]]:
    """Every audit entry, oldest first: (actor, action, queue)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT actor, action, details->>'queue' FROM taskhub.audit_log ORDER BY id"
        ).fetchall()


def jobs_of(url: str, task: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s", (task,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def paused_queues(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT queue_name FROM taskhub.paused_queues").fetchall()
    return [name for (name,) in rows]


def test_logging_in_with_a_token(browser: Browser, server: Server) -> None:
    page = browser.new_page()
    page.goto(server.dashboard("/"))
    expect(page).to_have_url(server.dashboard("/login?next=%2F"))
    shoot(page, "login")
    page.fill("input[name=token]", "a-wrong-token-0123456789")
    with page.expect_response(server.dashboard("/login")) as refused:
        page.click("button[type=submit]")
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    expect(page).to_have_url(server.dashboard("/login"))
    expect(page.locator("header.top .who")).to_have_count(0)
    page.fill("input[name=token]", OPERATE)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.dashboard("/"))
    expect(page.locator("h1")).to_have_text("Overview")
    expect(page.locator(".who")).to_contain_text("ops")
    page.close()
    # A deep link survives the login.
    page = browser.new_page()
    page.goto(server.dashboard("/queues"))
    expect(page).to_have_url(server.dashboard("/login?next=%2Fqueues"))
    page.fill("input[name=token]", READ)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.dashboard("/queues"))
    expect(page.locator("h1")).to_have_text("Queues")
    page.close()


def test_a_running_jobs_progress_bar_moves_without_reloading(
    browser: Browser, server: Server
) -> None:
    page = login(browser, server, OPERATE)
    job_id = defer_from_tasks_page(page, server, "browser.steps", '{"steps": 8, "pause": 0.7}')
    page.evaluate(WATCH_PROGRESS)
    # Half way, still the same document (a reload would have dropped the marker).
    page.wait_for_function(
        "() => window.__sameDocument === true"
        " && document.getElementById('job-progress-bar').value >= 50",
        timeout=15_000,
    )
    expect(page.locator("#job-progress-message")).to_contain_text("of 8")
    expect(page.locator("#job-status")).to_contain_text("doing")
    shoot(page, "job-running")
    # Once finished the page reloads itself once, with the result.
    finished(page, "succeeded", timeout=15_000)
    expect(page.locator("#job-result")).to_contain_text("8")
    expect(page.locator("#job-progress-text")).to_contain_text("8 / 8 (100%)")
    assert page.url == server.dashboard(f"/jobs/{job_id}")
    seen = progress_seen(page)
    moving = [(value, text) for value, text in seen if 0 < value < 100]
    assert len(moving) >= 2, seen  # at least two partial values, in one document
    assert [value for value, _ in seen] == sorted(value for value, _ in seen), seen
    assert all(re.fullmatch(r"\d / 8 \(\d+%\)", text) for _, text in moving), moving
    steps = [int(text.split(" / ")[0]) for _, text in moving]
    assert steps == sorted(steps), moving
    assert len(set(steps)) >= 2, moving
    page.close()


def test_a_failed_job_retried_from_the_failed_page_succeeds(
    browser: Browser, server: Server
) -> None:
    page = login(browser, server, OPERATE)
    marker = server.tmp / "erp-is-back"
    job_id = defer_from_tasks_page(page, server, "browser.flaky", f'{{"marker": "{marker}"}}')
    finished(page, "failed", timeout=15_000)
    expect(page.locator(".error-detail")).to_contain_text("the ERP answered 503")
    expect(page.locator(".traceback")).to_contain_text("ConnectionError")
    page.goto(server.dashboard("/failed?task=browser.flaky"))
    row = page.locator("tr", has=page.locator(f"a[href='/dashboard/jobs/{job_id}']"))
    expect(row).to_contain_text("the ERP answered 503")
    shoot(page, "failed")
    marker.write_text("ok")
    row.get_by_role("button", name="Retry").click()
    expect(page.locator(".flash")).to_contain_text(f"Job {job_id} will run again")
    page.goto(server.dashboard(f"/jobs/{job_id}"))
    finished(page, "succeeded", timeout=15_000)
    expect(page.locator("#job-result")).to_contain_text("recovered")
    assert job_row(server.url, job_id)["attempts"] == 2
    page.goto(server.dashboard("/failed?task=browser.flaky"))
    expect(page.locator(f"a[href='/dashboard/jobs/{job_id}']")).to_have_count(0)
    page.goto(server.dashboard("/audit"))
    expect(page.locator("table")).to_contain_text("dashboard:ops")
    shoot(page, "audit")
    page.close()


def test_pausing_and_resuming_a_queue(browser: Browser, server: Server) -> None:
    """With the row's buttons of a queue that has a job running (so that its row stays): a job
    deferred to it while paused waits, and runs once it is resumed."""
    page = login(browser, server, OPERATE)
    running = defer_from_tasks_page(page, server, "browser.steps", '{"steps": 12, "pause": 0.7}')
    expect(page.locator("#job-status")).to_contain_text("doing", timeout=15_000)
    page.goto(server.dashboard("/queues"))
    reports = page.locator("tr[data-queue='reports']")
    expect(reports.locator(".badge")).to_have_text("active")
    reports.get_by_role("button", name="Pause").click()
    expect(page.locator(".flash")).to_contain_text("Queue reports paused.")
    expect(reports.locator(".badge")).to_have_text("paused")
    held = defer_from_tasks_page(page, server, "browser.steps", '{"steps": 1, "pause": 0.1}')
    page.wait_for_timeout(1500)  # four free slots in the worker: only the pause holds it
    page.reload()
    expect(page.locator("#job-status")).to_contain_text("todo")
    assert job_row(server.url, held)["status"] == "todo"
    page.goto(server.dashboard("/queues"))
    expect(reports.locator("td.num").nth(0)).to_have_text("1")  # waiting
    expect(reports.locator("td.num").nth(1)).to_have_text("1")  # running
    shoot(page, "queues")
    reports.get_by_role("button", name="Resume").click()
    expect(page.locator(".flash")).to_contain_text("Queue reports resumed.")
    wait_status(server.url, held, "succeeded", timeout=15)
    assert job_row(server.url, running)["status"] == "doing", "resumed too late to check"
    page.reload()
    expect(reports.locator(".badge")).to_have_text("active")
    page.goto(server.dashboard(f"/jobs/{held}"))
    finished(page, "succeeded", timeout=5_000)
    entries = audited(server.url)
    assert ("dashboard:ops", "pause", "reports") in entries
    assert ("dashboard:ops", "resume", "reports") in entries
    assert paused_queues(server.url) == []
    page.close()


def test_a_read_only_user_sees_no_buttons_and_the_server_refuses_its_actions(
    browser: Browser, server: Server
) -> None:
    operator = login(browser, server, OPERATE)
    job_id = defer_from_tasks_page(operator, server, "browser.quick", "{}")
    operator.close()
    before = wait_status(server.url, job_id, "succeeded", timeout=15)
    quick_jobs = jobs_of(server.url, "browser.quick")
    page = login(browser, server, READ)
    expect(page.locator(".who")).to_contain_text("read")
    for path in ("/", "/queues", "/tasks", f"/jobs/{job_id}", "/failed", "/schedules", "/backups"):
        page.goto(server.dashboard(path))
        # The logout form is the only form that posts.
        expect(page.locator("form[method=post]")).to_have_count(1)
        expect(page.locator("form[action$='/logout']")).to_have_count(1)
    csrf = page.locator("form[action$='/logout'] input[name=csrf]").get_attribute("value")
    assert csrf
    refused = page.request.post(
        server.dashboard(f"/jobs/{job_id}/retry"), form={"csrf": csrf}, max_redirects=0
    )
    assert refused.status == 403
    assert "needs the operate scope" in refused.text()
    paused = page.request.post(
        server.dashboard("/queues/default/pause"), form={"csrf": csrf}, max_redirects=0
    )
    assert paused.status == 403
    deferred = page.request.post(
        server.dashboard("/tasks/browser.quick/defer"),
        form={"csrf": csrf, "args": "{}"},
        max_redirects=0,
    )
    assert deferred.status == 403
    assert job_row(server.url, job_id) == before
    assert paused_queues(server.url) == []
    assert not [entry for entry in audited(server.url) if entry[0] == "dashboard:viewer"]
    assert jobs_of(server.url, "browser.quick") == quick_jobs
    page.goto(server.dashboard("/queues"))
    expect(page.locator(".badge.status-paused")).to_have_count(0)
    page.close()


def test_an_action_without_a_csrf_token_is_refused(browser: Browser, server: Server) -> None:
    page = login(browser, server, OPERATE)
    answer = page.request.post(server.dashboard("/queues/default/pause"), max_redirects=0)
    assert answer.status == 403
    assert "CSRF" in answer.text()
    forged = page.request.post(
        server.dashboard("/queues/default/pause"), form={"csrf": "forged"}, max_redirects=0
    )
    assert forged.status == 403
    assert paused_queues(server.url) == []
    assert not [entry for entry in audited(server.url) if entry[2] == "default"]
    page.goto(server.dashboard("/queues"))
    expect(page.locator(".badge.status-paused")).to_have_count(0)
    page.close()


def _example(path: str) -> str:
    """A route's path with its parameters filled in."""
    return (
        path.replace("{job_id}", "1")
        .replace("{name}", "default")
        .replace("{task_name}", "taskhub.rollup_stats")
        .replace("{action}", "retry" if "/jobs/" in path or "/failed/" in path else "pause")
    )


def test_every_route_without_a_session(browser: Browser, server: Server) -> None:
    """Every route of the dashboard's router, found from the router itself: pages redirect to
    the login form, actions and live streams answer 401; only the login form and the static
    files are public."""
    routes = [route for route in pages.router.routes if isinstance(route, APIRoute)]
    assert len(routes) >= 20
    context = browser.new_context()
    checked = 0
    for route in routes:
        for method in sorted(route.methods or ()):
            path = _example(route.path)
            assert "{" not in path, f"{route.path}: give its parameter an example in _example"
            answer = context.request.fetch(server.dashboard(path), method=method, max_redirects=0)
            if route.path == "/login":
                assert answer.status in (200, 401), (method, path)
            elif method == "GET" and not path.startswith("/live/"):
                assert answer.status == 303, (method, path, answer.status)
                assert "/dashboard/login?next=" in answer.headers["location"], (method, path)
            else:
                assert answer.status == 401, (method, path, answer.status)
            checked += 1
    assert checked >= 20
    for name in ("dashboard.js", "dashboard.css", "favicon.svg"):
        answer = context.request.get(server.dashboard(f"/static/{name}"), max_redirects=0)
        assert answer.status == 200, name
    context.close()


def test_every_page_renders_and_is_saved(browser: Browser, server: Server) -> None:
    page = login(browser, server, OPERATE)
    # The statistics behind the charts, now rather than at the next minute.
    page.goto(server.dashboard("/schedules"))
    row = page.locator("tr", has_text="taskhub.rollup_stats")
    row.get_by_role("button", name="Run now").click()
    finished(page, "succeeded", timeout=15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    for name, path in (
        ("overview", "/"),
        ("overview-week", "/?range=week"),
        ("jobs", "/jobs"),
        ("workers", "/workers"),
        ("schedules", "/schedules"),
        ("backups", "/backups"),
        ("tasks", "/tasks"),
        ("alerts", "/alerts"),
    ):
        answer = page.goto(server.dashboard(path))
        assert answer is not None
        assert answer.status == 200, path
        expect(page.locator("h1")).to_be_visible()
        shoot(page, name)
    page.goto(server.dashboard("/"))
    expect(page.locator(".chart-card svg")).to_have_count(4)
    expect(page.locator("#live-state")).to_have_text("live")
    assert errors == []
    page.close()


def test_the_demo_from_its_banner_to_a_finished_erp_sync(
    browser: Browser,
    admin_url: str,
    template_name: str,
    tmp_path: Path,
) -> None:
    """What a newcomer does: `taskhub up --demo`, open the printed dashboard address, log in
    with the printed token, start an ERP sync and watch its progress bar reach the end. The
    README's two screenshots come from here; a few failing jobs of the test app (loaded
    beside the demo's) give the overview's charts failures too."""
    write_app(tmp_path)
    name = f"taskhub_browser_demo_{os.getpid()}"
    url = create_database(admin_url, name, template=template_name)
    port = free_port()
    env = clean_env(
        DATABASE_URL=url,
        PYTHONPATH=str(tmp_path),
        TASKHUB_DATA_DIR=str(tmp_path / ".taskhub"),
        TASKHUB_API_PORT=str(port),
        TASKHUB_WORKER_PROCESSES="1",
    )
    up = TaskhubProcess(["up", "--demo", "--app", "browserapp.jobs"], tmp_path, env)
    try:
        up.wait_for_line("Stop with Ctrl-C.", timeout=90)
        [address] = re.findall(r"dashboard: (http://\S+/dashboard)", up.output)
        [token] = re.findall(r"token: +(\S+) \(admin", up.output)
        api = address.removesuffix("/dashboard")
        headers = {"Authorization": f"Bearer {token}"}
        failing = [
            httpx.post(
                f"{api}/jobs",
                headers=headers,
                json={"task": "browser.flaky", "args": {"marker": str(tmp_path / "absent")}},
            )
            for _ in range(3)
        ]
        assert [answer.status_code for answer in failing] == [201] * 3
        page = browser.new_page(viewport={"width": 1360, "height": 860})
        page.goto(address)
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.goto(f"{address}/tasks")
        card = page.locator("details[id='task-erp.sync_assets']")
        card.locator("summary").click()
        expect(card.locator("textarea[name=args]")).to_have_value('{"force_full_sync": false}')
        card.get_by_role("button", name="Defer").click()
        expect(page).to_have_url(re.compile(r"/dashboard/jobs/\d+$"))
        page.evaluate(WATCH_PROGRESS)
        finished(page, "succeeded", timeout=30_000)
        expect(page.locator("#job-progress-text")).to_contain_text("3000 / 3000 (100%)")
        expect(page.locator("#job-result")).to_contain_text('"created": 3000')
        seen = progress_seen(page)
        assert any(0 < value < 100 for value, _ in seen), seen  # it moved on the page
        assert [value for value, _ in seen] == sorted(value for value, _ in seen), seen
        shoot(page, "demo-job", readme="dashboard-job")
        for answer in failing:
            wait_status(url, answer.json()["id"], "failed", timeout=15)
        page.goto(f"{address}/schedules")
        row = page.locator("tr", has_text="taskhub.rollup_stats")
        row.get_by_role("button", name="Run now").click()
        finished(page, "succeeded", timeout=15_000)
        page.goto(address + "/")
        expect(page.locator(".chart-card svg")).to_have_count(4)
        expect(page.locator("#live-state")).to_have_text("live")
        shoot(page, "demo-overview", readme="dashboard-overview")
        page.close()
    finally:
        if up.process.poll() is None:
            up.stop()
        drop_database(admin_url, name)
