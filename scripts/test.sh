#!/usr/bin/env bash
# Install taskhub and its test tools into .venv, then lint, type-check and run every test.
# Tests use TEST_DATABASE_URL when set, otherwise an embedded PostgreSQL they start themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# promtool checks the /metrics output (tests/integration/test_stats.py): Debian's prometheus.
if ! command -v promtool >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The dashboard's browser tests (tests/e2e/test_dashboard_in_browser.py) drive Debian's Chromium
# with Playwright (installed by pip above); never Playwright's own browser download.
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# The clock-skew fault test (tests/e2e/faults/test_clock_skew.py) preloads Debian's libfaketime.
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libfaketime >/dev/null
fi
.venv/bin/pytest "$@"
