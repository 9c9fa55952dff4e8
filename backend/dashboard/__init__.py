"""The dashboard: every job, queue, worker, schedule and alert in a browser (Flower's place).

Server-rendered pages (Jinja2) with a little JavaScript for live updates, which arrive over
server-sent events woken by PostgreSQL's LISTEN/NOTIFY. ``create_dashboard`` builds it as an
ASGI app: taskhub's API mounts it at ``/dashboard``; an application can mount it anywhere.
"""

from __future__ import annotations

from backend.dashboard.app import create_dashboard

__all__ = ["create_dashboard"]
