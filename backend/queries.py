"""Named SQL queries, loaded from ``.sql`` files: taskhub's from backend/sql/, an app's from
its own folder (``load_queries("proj.sql")``)."""

from __future__ import annotations

from importlib import resources
from typing import LiteralString

from backend.runtime.internals import parse_query_file


def load_queries(package: str) -> dict[str, LiteralString]:
    """Every ``-- name`` block of the ``.sql`` files in ``package``; a name defined twice is
    an error."""
    queries: dict[str, LiteralString] = {}
    for source in sorted(resources.files(package).iterdir(), key=lambda item: item.name):
        if not source.name.endswith(".sql"):
            continue
        for name, query in parse_query_file(source.read_text(encoding="utf-8")).items():
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice in {package}")
            queries[name] = query
    return queries


QUERIES: dict[str, LiteralString] = load_queries("backend.sql")
