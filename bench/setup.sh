#!/usr/bin/env bash
# Create bench/.venv, the benchmark environment: taskhub (editable, from the repository root)
# plus the peers pinned in bench/requirements.txt. Kept apart from .venv so that taskhub's own
# dependencies never include its competitors. Quick when already done: it skips the install
# while a stamp matches the hash of bench/requirements.txt and pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=bench/.venv
stamp="$venv/.installed-sha256"
want="$(cat bench/requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "bench/.venv is up to date" >&2
    exit 0
fi
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e . -r bench/requirements.txt
echo "$want" >"$stamp"
echo "bench/.venv is ready: run bench/.venv/bin/python bench/throughput.py" >&2
