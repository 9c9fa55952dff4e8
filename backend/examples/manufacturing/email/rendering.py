"""The emails' templates: a folder per template in ``templates/`` with ``subject.txt``,
``body.txt`` and ``body.html``, rendered with Jinja2.

The context comes from callers (names, order numbers, a newsletter's articles), so the HTML
body escapes it, links keep only http(s) addresses, the subject is one line (no header
injection), and a variable the template needs but the context lacks is an error, not a blank.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from backend.errors import TaskhubError

TEMPLATES = Path(__file__).parent / "templates"
#: Every template this family ships (a folder with its three parts).
TEMPLATE_NAMES = frozenset(
    folder.name for folder in TEMPLATES.iterdir() if (folder / "subject.txt").is_file()
)
SAFE_URL = re.compile(r"^https?://[^\s\"'<>]+$", re.IGNORECASE)
SUBJECT_MAX = 200


class TemplateProblem(TaskhubError):
    """An email cannot be rendered: an unknown template, or a context that lacks what the
    template needs. A retry would not help; the message says what to fix."""

    status_code = 422


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def http_url(value: Any) -> str:
    """``value`` if it is an http(s) address, else ``#``: a context cannot smuggle in a
    ``javascript:`` link."""
    text = str(value)
    return text if SAFE_URL.match(text) else "#"


def _environment(autoescape: bool) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["http_url"] = http_url
    return environment


_TEXT = _environment(autoescape=False)
_HTML = _environment(autoescape=True)


def render(template: str, context: Mapping[str, Any]) -> Rendered:
    """The subject, text and HTML bodies of ``template`` with ``context``."""
    if template not in TEMPLATE_NAMES:
        known = ", ".join(sorted(TEMPLATE_NAMES))
        raise TemplateProblem(f"no email template {template!r}: use one of {known}")
    values = dict(context)
    try:
        subject = _TEXT.get_template(f"{template}/subject.txt").render(values)
        text = _TEXT.get_template(f"{template}/body.txt").render(values)
        html = _HTML.get_template(f"{template}/body.html").render(values)
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(
            f"email template {template!r} cannot be rendered: {exc.message} (add it to the context)"
        ) from None
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"email template {template!r} failed: {exc}") from None
    return Rendered(subject=" ".join(subject.split())[:SUBJECT_MAX], text=text, html=html)
