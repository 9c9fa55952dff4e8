"""The one place taskhub's SQL is loaded from: backend/sql/queries.sql."""

from __future__ import annotations

from importlib import resources
from typing import LiteralString

from procrastinate.sql import parse_query_file

QUERIES: dict[str, LiteralString] = parse_query_file(
    (resources.files("backend.sql") / "queries.sql").read_text(encoding="utf-8")
)
