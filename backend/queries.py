"""The one place taskhub's SQL is loaded from: the named queries in backend/sql/*.sql."""

from __future__ import annotations

from importlib import resources
from typing import LiteralString

from procrastinate.sql import parse_query_file


def _load() -> dict[str, LiteralString]:
    queries: dict[str, LiteralString] = {}
    for source in sorted(resources.files("backend.sql").iterdir(), key=lambda item: item.name):
        if not source.name.endswith(".sql"):
            continue
        for name, query in parse_query_file(source.read_text(encoding="utf-8")).items():
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice in backend/sql")
            queries[name] = query
    return queries


QUERIES: dict[str, LiteralString] = _load()
