#!/usr/bin/env bash
# Create bench/.venv, the benchmark environment: taskhub (editable, from the repository root)
# plus the peers pinned in bench/requirements.txt. Kept apart from .venv so that taskhub's own
# dependencies never include its competitors. Quick when already done: it skips the install
# while a stamp matches the hash of bench/requirements.txt and pyproject.toml.
#
# Also bench/.venv312 for oban (Python >= 3.12 only; bench/requirements-oban.txt), with the
# Python 3.12 of $BENCH_PYTHON312 (default: pyenv's 3.12.1): skipped with a message when that
# Python is absent, and bench/throughput.py then reports the oban rows as not run.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=bench/.venv
stamp="$venv/.installed-sha256"
want="$(cat bench/requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"

setup_main() {
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "bench/.venv is up to date" >&2
        return 0
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e . -r bench/requirements.txt
    echo "$want" >"$stamp"
    echo "bench/.venv is ready: run bench/.venv/bin/python bench/throughput.py" >&2
}

setup_oban() {
    local python312="${BENCH_PYTHON312:-/root/.pyenv/versions/3.12.1/bin/python3.12}"
    local venv312=bench/.venv312
    local stamp312="$venv312/.installed-sha256"
    local want312
    want312="$(sha256sum bench/requirements-oban.txt | cut -d' ' -f1)"
    if [[ ! -x "$python312" ]]; then
        echo "no Python 3.12 at $python312 (set BENCH_PYTHON312): bench/.venv312 skipped," \
            "the oban rows will not run" >&2
        return 0
    fi
    if [[ -x "$venv312/bin/oban" && -f "$stamp312" && "$(cat "$stamp312")" == "$want312" ]]; then
        echo "bench/.venv312 is up to date" >&2
        return 0
    fi
    if [[ ! -x "$venv312/bin/python" ]]; then
        "$python312" -m venv "$venv312"
    fi
    echo "*" >"$venv312/.gitignore"  # as Python 3.13's venv does: never committed
    "$venv312/bin/python" -m pip install -q --disable-pip-version-check -r bench/requirements-oban.txt
    echo "$want312" >"$stamp312"
    echo "bench/.venv312 is ready (oban)" >&2
}

setup_main
setup_oban
