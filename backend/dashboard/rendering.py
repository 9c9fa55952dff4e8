"""Jinja2 templates shipped in the package, with the filters the pages share."""

from __future__ import annotations

import datetime
import json
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

FLASH_COOKIE = "taskhub_flash"
MAX_FLASH = 300


def base_path(request: Request) -> str:
    """Where the dashboard is mounted (``/dashboard``, or an application's prefix)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def _utc(value: datetime.datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ago(value: datetime.datetime | None) -> str:
    if value is None:
        return "—"
    seconds = (datetime.datetime.now(datetime.UTC) - value).total_seconds()
    future = seconds < 0
    text = _seconds(abs(seconds))
    return f"in {text}" if future else f"{text} ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172_800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86_400:.1f} d"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _percent(done: int | None, total: int | None) -> int | None:
    if done is None or not total:
        return None
    return max(0, min(100, round(100 * done / total)))


class Templates:
    def __init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("backend.dashboard", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(utc=_utc, ago=_ago, seconds=_seconds, pretty=_pretty)
        self.env.globals.update(percent=_percent, safe_svg=Markup)

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)

    def page(
        self, request: Request, name: str, *, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        """A whole page: the base layout's context (mount path, session, flash) added."""
        flash = unquote(request.cookies.get(FLASH_COOKIE, ""))[:MAX_FLASH]
        context.setdefault("session", None)
        context.setdefault("live_url", None)
        context.setdefault("active", "")
        response = HTMLResponse(
            self.render(name, base=base_path(request), flash=flash, **context),
            status_code=status_code,
        )
        if flash:
            response.delete_cookie(FLASH_COOKIE, path=base_path(request) or "/")
        return response


def redirect_with(request: Request, to: str, message: str) -> RedirectResponse:
    """After an action: back to a page (of this dashboard), which shows ``message`` once."""
    base = base_path(request)
    response = RedirectResponse(f"{base}{to}", status_code=303)
    response.set_cookie(
        FLASH_COOKIE,
        quote(message[:MAX_FLASH]),
        max_age=60,
        path=base or "/",
        httponly=True,
        samesite="strict",
    )
    return response
