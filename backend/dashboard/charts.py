"""The overview page's charts: jobs per minute, queue depth, failure rate and p95 duration over
the last hour, day or week, read from the rollup (taskhub.task_stats, taskhub.queue_depth) and
drawn here as inline SVG: no JavaScript, no external assets, every text XML-escaped.

Colours come from CSS classes (``series-succeeded``, ``series-failed``, ``series-waiting``,
``series-running``, ``series-failure-rate``, ``series-p95``), styled by static/dashboard.css.
Presentation attributes give neutral defaults that any stylesheet overrides.
"""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from backend.control import stats
from backend.db import DictConnection
from backend.errors import TaskhubError
from backend.queries import QUERIES

UTC = datetime.UTC


@dataclass(frozen=True)
class Range:
    seconds: int
    step: int  # seconds per point
    label: str
    tick: int  # seconds between labelled ticks on the time axis, aligned to UTC
    tick_format: str  # strftime of a tick's label (UTC)


RANGES: dict[str, Range] = {
    "hour": Range(3600, 60, "Last hour", 600, "%H:%M"),
    "day": Range(86_400, 900, "Last day", 4 * 3600, "%H:%M"),
    "week": Range(7 * 86_400, 3600, "Last week", 86_400, "%a %H:%M"),
}


class UnknownRange(TaskhubError):
    """The chart range is not one of RANGES."""

    status_code = 422
    exit_code = 2


class Chart(BaseModel):
    title: str
    subtitle: str
    svg: str


@dataclass(frozen=True)
class Frame:
    """The steps a chart shows: ``steps`` of ``range.step`` seconds from ``since`` (aligned to
    the step in UTC) to ``until``; the last one holds ``now`` and is partly over."""

    range: Range
    since: datetime.datetime
    until: datetime.datetime
    now: datetime.datetime

    @classmethod
    def ending_at(cls, chosen: Range, now: datetime.datetime) -> Frame:
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        step = chosen.step
        until_epoch = (math.floor(now.timestamp() / step) + 1) * step
        until = datetime.datetime.fromtimestamp(until_epoch, UTC)
        return cls(chosen, until - datetime.timedelta(seconds=chosen.seconds), until, now)

    @property
    def steps(self) -> int:
        return self.range.seconds // self.range.step

    def start(self, slot: int) -> datetime.datetime:
        return self.since + datetime.timedelta(seconds=slot * self.range.step)

    def minutes(self, slot: int) -> int:
        """Minutes of the rollup a step holds: all of them, but for the current step only
        those begun by now (so its rate is not diluted by minutes still to come)."""
        full = self.range.step // 60
        if slot < self.steps - 1:
            return full
        begun = int((self.now - self.start(slot)).total_seconds() // 60) + 1
        return max(1, min(full, begun))


@dataclass(frozen=True)
class Line:
    name: str
    css: str  # class of the series, e.g. series-succeeded
    values: Sequence[float | None]  # one per step; None is a gap


# The drawing's coordinate system (the viewBox); the SVG scales to its container's width.
WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 26, 22


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def number(value: float) -> str:
    """A value for people: at most two decimals, none when whole, thousands separated."""
    rounded = round(value, 2)
    if rounded == int(rounded):
        return f"{int(rounded):,}"
    return f"{rounded:,.2f}".rstrip("0")


def nice_step(rough: float) -> float:
    """The 1, 2, 2.5 or 5 times a power of ten at or above ``rough``."""
    power = 10.0 ** math.floor(math.log10(rough))
    for factor in (1.0, 2.0, 2.5, 5.0):
        if factor * power >= rough * (1 - 1e-9):
            return factor * power
    return 10 * power


def value_ticks(peak: float, integer: bool = False) -> list[float]:
    """From 0 to at or above ``peak`` in two to five nice steps (whole ones for counts)."""
    if peak <= 0:
        return [0.0, 1.0]
    step = nice_step(peak / 4)
    if integer:
        step = max(1.0, math.ceil(step))
    top = math.ceil(peak / step - 1e-9) * step
    return [index * step for index in range(round(top / step) + 1)]


def time_ticks(frame: Frame) -> list[datetime.datetime]:
    """Instants in [since, until] that are a multiple of the range's tick (UTC)."""
    tick = frame.range.tick
    first = math.ceil(frame.since.timestamp() / tick) * tick
    last = frame.until.timestamp()
    return [datetime.datetime.fromtimestamp(at, UTC) for at in range(first, int(last) + 1, tick)]


def step_label(step: int) -> str:
    if step % 3600 == 0:
        return "hour" if step == 3600 else f"{step // 3600} h"
    return "minute" if step == 60 else f"{step // 60} min"


def when(frame: Frame, slot: int) -> str:
    start = frame.start(slot)
    if frame.range.step == 60:
        return f"{start:%Y-%m-%d %H:%M} UTC"
    end = start + datetime.timedelta(seconds=frame.range.step)
    return f"{start:%Y-%m-%d %H:%M}\u2013{end:%H:%M} UTC"


def render_svg(
    title: str,
    frame: Frame,
    lines: Sequence[Line],
    unit: str = "",
    *,
    empty: bool = False,
    integer: bool = False,
) -> str:
    """A line chart of ``lines`` (one value per step of ``frame``) with time and value axes,
    a legend and a ``<title>`` per step listing every series' value there. ``empty`` draws
    the axes and a "no data in this range" note instead of lines."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bottom = TOP + plot_h
    span = (frame.until - frame.since).total_seconds()

    def x_at(at: datetime.datetime) -> float:
        return LEFT + plot_w * (at - frame.since).total_seconds() / span

    def x_of(slot: int) -> float:  # the middle of the step
        return LEFT + plot_w * (slot + 0.5) / frame.steps

    values = [v for line in lines for v in line.values if v is not None]
    blank = empty or not values
    ticks = value_ticks(0.0 if blank else max(values), integer)
    top_value = ticks[-1]

    def y_of(value: float) -> float:
        return bottom - plot_h * value / top_value

    suffix = unit if unit.startswith(("/", "%")) else f" {unit}" if unit else ""

    def shown(value: float | None) -> str:
        return "no data" if value is None else f"{number(value)}{suffix}"

    if blank:
        summary = "no data in this range"
    else:
        summary = ", ".join(f"{line.name} peak {shown(peak(line.values))}" for line in lines)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' width="100%" preserveAspectRatio="xMidYMid meet" role="img"'
        f' aria-label="{esc(f"{title}, {frame.range.label.lower()}: {summary}")}"'
        ' font-family="sans-serif" font-size="10">'
    ]
    # Value axis: gridlines and labels.
    parts.append('<g class="axis axis-y" fill="currentColor">')
    for value in ticks:
        y = y_of(value)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}"'
            ' stroke="currentColor" stroke-opacity="0.15"/>'
        )
        if not blank:  # an empty chart's scale means nothing
            parts.append(
                f'<text x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">'
                f"{esc(number(value))}</text>"
            )
    parts.append("</g>")
    # Time axis: the baseline and labelled ticks.
    parts.append('<g class="axis axis-x" fill="currentColor">')
    parts.append(
        f'<line class="baseline" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{bottom}" y2="{bottom}"'
        ' stroke="currentColor" stroke-opacity="0.5"/>'
    )
    for at in time_ticks(frame):
        x = x_at(at)
        anchor = "start" if x < LEFT + 20 else "end" if x > LEFT + plot_w - 20 else "middle"
        parts.append(
            f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"'
            ' stroke="currentColor" stroke-opacity="0.5"/>'
            f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="{anchor}">'
            f"{esc(at.strftime(frame.range.tick_format))}</text>"
        )
    parts.append("</g>")
    # Legend, above the plot.
    parts.append('<g class="legend" fill="currentColor">')
    x = float(LEFT)
    for line in lines:
        parts.append(
            f'<line class="swatch {esc(line.css)}" x1="{x:.1f}" x2="{x + 14:.1f}" y1="12" y2="12"'
            ' stroke="currentColor" stroke-width="3"/>'
            f'<text x="{x + 18:.1f}" y="15">{esc(line.name)}</text>'
        )
        x += 36 + 8 * len(line.name)
    parts.append("</g>")
    if blank:
        parts.append(
            f'<text class="chart-empty" x="{LEFT + plot_w / 2:.1f}" y="{TOP + plot_h / 2:.1f}"'
            ' text-anchor="middle" fill="currentColor" fill-opacity="0.6">'
            "no data in this range</text></svg>"
        )
        return "".join(parts)
    # The series: a path per run of values without gaps; a lone value is a dot.
    for line in lines:
        parts.append(f'<g class="series {esc(line.css)}">')
        parts.append(f"<title>{esc(line.name)}</title>")
        for run in runs(line.values):
            if len(run) == 1:
                slot, value = run[0]
                parts.append(
                    f'<circle class="point" cx="{x_of(slot):.1f}" cy="{y_of(value):.1f}" r="2"'
                    ' fill="currentColor"/>'
                )
                continue
            points = " L".join(f"{x_of(slot):.1f},{y_of(value):.1f}" for slot, value in run)
            parts.append(
                f'<path class="line" d="M{points}" fill="none" stroke="currentColor"'
                ' stroke-width="1.5" stroke-linejoin="round"/>'
            )
        parts.append("</g>")
    # A transparent column per step whose <title> shows every series' value there.
    parts.append('<g class="hovers">')
    width = plot_w / frame.steps
    for slot in range(frame.steps):
        text = f"{when(frame, slot)}: " + ", ".join(
            f"{line.name} {shown(line.values[slot])}" for line in lines
        )
        parts.append(
            f'<rect class="hover" x="{LEFT + slot * width:.2f}" y="{TOP}" width="{width:.2f}"'
            f' height="{plot_h}" fill="transparent"><title>{esc(text)}</title></rect>'
        )
    parts.append("</g></svg>")
    return "".join(parts)


def peak(values: Sequence[float | None]) -> float | None:
    return max((value for value in values if value is not None), default=None)


def runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The stretches of consecutive values that are not None, with their slots."""
    found: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for slot, value in enumerate(values):
        if value is None:
            if current:
                found.append(current)
            current = []
        else:
            current.append((slot, value))
    if current:
        found.append(current)
    return found


def per_minute(frame: Frame, counts: Sequence[int]) -> list[float]:
    """Counts per step as rates per minute (the current step over its minutes begun)."""
    return [count / frame.minutes(slot) for slot, count in enumerate(counts)]


def failure_rate(succeeded: int, failed: int) -> float | None:
    finished = succeeded + failed
    return 100 * failed / finished if finished else None


async def overview_charts(
    conn: DictConnection, range_name: str, now: datetime.datetime | None = None
) -> list[Chart]:
    """Jobs per minute, queue depth, failure rate and p95 duration over the range ending now
    (hour, day or week), from the range's rows of the rollup alone (three short reads)."""
    chosen = RANGES.get(range_name)
    if chosen is None:
        raise UnknownRange(f"unknown range {range_name!r}: choose one of {', '.join(RANGES)}")
    frame = Frame.ending_at(chosen, now or datetime.datetime.now(UTC))
    params = {"since": frame.since, "until": frame.until, "step": chosen.step}
    steps = frame.steps
    succeeded, failed = [0] * steps, [0] * steps
    buckets: list[list[int] | None] = [None] * steps
    cursor = await conn.execute(QUERIES["chart_outcomes"], params)
    outcome_rows = await cursor.fetchall()
    for row in outcome_rows:
        slot = row["slot"]
        succeeded[slot], failed[slot] = row["succeeded"], row["failed"]
        buckets[slot] = row["buckets"]
    waiting, running = [0] * steps, [0] * steps
    cursor = await conn.execute(QUERIES["chart_queue_depth"], params)
    depth_rows = await cursor.fetchall()
    for row in depth_rows:
        waiting[row["slot"]], running[row["slot"]] = row["waiting"], row["running"]
    bounds = await stats.bounds(conn) if outcome_rows else []
    p95 = [None if b is None else stats.quantile(bounds, b, 0.95) for b in buckets]

    per = step_label(chosen.step)
    over = "" if chosen.step == 60 else f", averaged over each {per}"
    jobs = (
        Line("succeeded", "series-succeeded", per_minute(frame, succeeded)),
        Line("failed", "series-failed", per_minute(frame, failed)),
    )
    depth = (
        Line("waiting", "series-waiting", [float(n) for n in waiting]),
        Line("running", "series-running", [float(n) for n in running]),
    )
    rate = (
        Line(
            "failure rate",
            "series-failure-rate",
            [failure_rate(s, f) for s, f in zip(succeeded, failed, strict=True)],
        ),
    )
    p95_line = (Line("p95", "series-p95", p95),)
    no_outcomes = not outcome_rows
    return [
        Chart(
            title="Jobs per minute",
            subtitle=f"Jobs that succeeded and failed, per minute{over} (UTC)",
            svg=render_svg("Jobs per minute", frame, jobs, "/min", empty=no_outcomes),
        ),
        Chart(
            title="Queue depth",
            subtitle=(
                "Jobs waiting (due) and running, all queues, sampled each minute (UTC)"
                if chosen.step == 60
                else f"Jobs waiting (due) and running, all queues: the peak of each {per} (UTC)"
            ),
            svg=render_svg("Queue depth", frame, depth, "jobs", empty=not depth_rows, integer=True),
        ),
        Chart(
            title="Failure rate",
            subtitle=f"Failed / (succeeded + failed) per {per}, in % (gaps: no job finished)",
            svg=render_svg("Failure rate", frame, rate, "%", empty=no_outcomes),
        ),
        Chart(
            title="p95 duration",
            subtitle=f"95th percentile of attempt durations per {per}, all tasks, in seconds",
            svg=render_svg("p95 duration", frame, p95_line, "s", empty=no_outcomes),
        ),
    ]
