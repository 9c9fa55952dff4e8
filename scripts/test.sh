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
.venv/bin/pytest "$@"
