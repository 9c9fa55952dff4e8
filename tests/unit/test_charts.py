"""The overview charts' SVG renderer: escaping, scaling, empty ranges, ticks, rates per minute."""

from __future__ import annotations

import datetime
import re
import xml.etree.ElementTree as ET
from typing import cast

import pytest

from backend.dashboard import charts
from backend.dashboard.charts import RANGES, Frame, Line, render_svg
from backend.db import DictConnection

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime.datetime(2026, 12, 4, 10, 37, 30, tzinfo=datetime.UTC)  # a Friday


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # fails on anything that is not well-formed XML


def hover_titles(svg: str) -> list[str]:
    root = parse(svg)
    return [
        "".join(rect.itertext())
        for rect in root.iter(f"{SVG}rect")
        if "hover" in rect.get("class", "").split()
    ]


def tick_labels(svg: str, axis: str) -> list[str]:
    root = parse(svg)
    [group] = [g for g in root.iter(f"{SVG}g") if axis in g.get("class", "").split()]
    return [text.text or "" for text in group.iter(f"{SVG}text")]


def test_frames_end_after_the_step_that_holds_now() -> None:
    hour = Frame.ending_at(RANGES["hour"], NOW)
    assert hour.until == datetime.datetime(2026, 12, 4, 10, 38, tzinfo=datetime.UTC)
    assert hour.since == datetime.datetime(2026, 12, 4, 9, 38, tzinfo=datetime.UTC)
    assert hour.steps == 60
    day = Frame.ending_at(RANGES["day"], NOW)
    assert day.until == datetime.datetime(2026, 12, 4, 10, 45, tzinfo=datetime.UTC)
    assert day.steps == 96
    week = Frame.ending_at(RANGES["week"], NOW)
    assert week.until == datetime.datetime(2026, 12, 4, 11, 0, tzinfo=datetime.UTC)
    assert week.since == datetime.datetime(2026, 11, 27, 11, 0, tzinfo=datetime.UTC)
    assert week.steps == 168
    naive = Frame.ending_at(RANGES["hour"], NOW.replace(tzinfo=None))
    assert naive.until == hour.until, "a naive now is taken as UTC"


def test_counts_become_rates_per_minute_and_the_current_step_counts_its_minutes_begun() -> None:
    day = Frame.ending_at(RANGES["day"], NOW)  # the last step, 10:30-10:45, began 7.5 min ago
    counts = [0] * day.steps
    counts[0], counts[-2], counts[-1] = 30, 45, 16
    rates = charts.per_minute(day, counts)
    assert rates[0] == 2.0, "30 jobs in 15 minutes"
    assert rates[-2] == 3.0
    assert rates[-1] == 2.0, "16 jobs in the 8 minutes 10:30-10:37 begun so far"
    hour = Frame.ending_at(RANGES["hour"], NOW)
    assert charts.per_minute(hour, [7] * 60) == [7.0] * 60
    week = Frame.ending_at(RANGES["week"], NOW)
    assert week.minutes(0) == 60
    assert week.minutes(week.steps - 1) == 38, "10:00-10:37"


def test_failure_rate_is_a_percentage_or_a_gap() -> None:
    assert charts.failure_rate(3, 1) == 25.0
    assert charts.failure_rate(0, 0) is None
    assert charts.failure_rate(0, 2) == 100.0


@pytest.mark.parametrize(
    ("peak", "integer", "expected"),
    [
        (0.0, False, [0.0, 1.0]),
        (3.3, False, [0.0, 1.0, 2.0, 3.0, 4.0]),
        (100.0, False, [0.0, 25.0, 50.0, 75.0, 100.0]),
        (0.07, False, [0.0, 0.02, 0.04, 0.06, 0.08]),
        (1.0, True, [0.0, 1.0]),
        (3.0, True, [0.0, 1.0, 2.0, 3.0]),
        (1234.0, False, [0.0, 500.0, 1000.0, 1500.0]),
    ],
)
def test_value_ticks_are_round_and_reach_the_peak(
    peak: float, integer: bool, expected: list[float]
) -> None:
    assert charts.value_ticks(peak, integer) == pytest.approx(expected)


def test_numbers_are_shown_with_at_most_two_decimals() -> None:
    assert [charts.number(v) for v in (0, 2.0, 2.5, 0.333, 1234.0, 12.345)] == [
        "0",
        "2",
        "2.5",
        "0.33",
        "1,234",
        "12.35",
    ]


def test_the_time_axis_is_labelled_in_utc_per_range() -> None:
    def labels(range_name: str) -> list[str]:
        frame = Frame.ending_at(RANGES[range_name], NOW)
        return tick_labels(render_svg("t", frame, [Line("n", "n", [1.0] * frame.steps)]), "axis-x")

    assert labels("hour") == ["09:40", "09:50", "10:00", "10:10", "10:20", "10:30"]
    assert labels("day") == ["12:00", "16:00", "20:00", "00:00", "04:00", "08:00"]
    assert labels("week") == [
        "Sat 00:00",
        "Sun 00:00",
        "Mon 00:00",
        "Tue 00:00",
        "Wed 00:00",
        "Thu 00:00",
        "Fri 00:00",
    ]


def test_values_are_scaled_to_the_plot_and_each_step_has_a_title() -> None:
    hour = Frame.ending_at(RANGES["hour"], NOW)
    values: list[float | None] = [0.0] * hour.steps
    values[0], values[30] = 4.0, 2.0
    svg = render_svg(
        "Jobs per minute", hour, [Line("succeeded", "series-succeeded", values)], "/min"
    )
    root = parse(svg)
    [path] = [p for p in root.iter(f"{SVG}path") if p.get("class") == "line"]
    points = [
        tuple(map(float, xy.split(","))) for xy in re.findall(r"[\d.]+,[\d.]+", path.get("d", ""))
    ]
    assert len(points) == hour.steps
    bottom = charts.HEIGHT - charts.BOTTOM
    assert points[0][1] == pytest.approx(charts.TOP), "the peak, 4, is the top tick"
    assert points[30][1] == pytest.approx((charts.TOP + bottom) / 2)
    assert points[1][1] == pytest.approx(bottom)
    xs = [x for x, _ in points]
    assert xs == sorted(xs)
    assert charts.LEFT < xs[0] < xs[-1] < charts.WIDTH - charts.RIGHT
    assert tick_labels(svg, "axis-y") == ["0", "1", "2", "3", "4"]
    titles = hover_titles(svg)
    assert len(titles) == hour.steps
    assert titles[0] == "2026-12-04 09:38 UTC: succeeded 4/min"
    assert titles[30] == "2026-12-04 10:08 UTC: succeeded 2/min"
    assert root.get("viewBox") == f"0 0 {charts.WIDTH} {charts.HEIGHT}"
    assert root.get("width") == "100%"
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Jobs per minute, last hour: succeeded peak 4/min"


def test_gaps_break_the_line_and_a_lone_value_is_a_dot() -> None:
    day = Frame.ending_at(RANGES["day"], NOW)
    values: list[float | None] = [None] * day.steps
    values[2], values[3], values[10] = 10.0, 20.0, 5.0
    svg = render_svg(
        "Failure rate", day, [Line("failure rate", "series-failure-rate", values)], "%"
    )
    root = parse(svg)
    [series] = [g for g in root.iter(f"{SVG}g") if "series-failure-rate" in g.get("class", "")]
    assert [child.tag.removeprefix(SVG) for child in series] == ["title", "path", "circle"]
    titles = hover_titles(svg)
    assert titles[0].endswith(": failure rate no data")
    assert titles[2] == "2026-12-03 11:15\u201311:30 UTC: failure rate 10%"
    assert titles[10] == "2026-12-03 13:15\u201313:30 UTC: failure rate 5%"


def test_every_text_is_escaped() -> None:
    hour = Frame.ending_at(RANGES["hour"], NOW)
    nasty = '<script>alert("x")</script> & co'
    lines = [Line(nasty, 'series-x" onload="alert(1)', [1.0] * hour.steps)]
    svg = render_svg(nasty, hour, lines, "<u>")
    root = parse(svg)
    assert "<script>" not in svg
    assert 'onload="' not in svg
    assert not list(root.iter(f"{SVG}script"))
    legend = tick_labels(svg, "legend")
    assert legend == [nasty], "shown as text, not markup"
    assert nasty in root.get("aria-label", "")
    assert hover_titles(svg)[0].endswith(f"{nasty} 1 <u>")
    assert all(not key.startswith("on") for element in root.iter() for key in element.attrib)


def test_an_empty_range_draws_axes_a_legend_and_a_note() -> None:
    week = Frame.ending_at(RANGES["week"], NOW)
    lines = [Line("waiting", "series-waiting", [0.0] * week.steps)]
    svg = render_svg("Queue depth", week, lines, "jobs", empty=True)
    root = parse(svg)
    notes = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "chart-empty"]
    assert notes == ["no data in this range"]
    assert hover_titles(svg) == []
    assert list(root.iter(f"{SVG}path")) == []
    assert tick_labels(svg, "legend") == ["waiting"]
    assert len(tick_labels(svg, "axis-x")) == 7
    assert tick_labels(svg, "axis-y") == [], "no scale without data"
    assert root.get("aria-label") == "Queue depth, last week: no data in this range"
    gaps_only = render_svg("p95", week, [Line("p95", "series-p95", [None] * week.steps)], "s")
    assert "no data in this range" in gaps_only, "nothing but gaps is no data too"


def test_series_carry_their_css_class_for_colours() -> None:
    hour = Frame.ending_at(RANGES["hour"], NOW)
    lines = [
        Line("succeeded", "series-succeeded", [1.0] * hour.steps),
        Line("failed", "series-failed", [0.0] * hour.steps),
    ]
    root = parse(render_svg("Jobs per minute", hour, lines, "/min"))
    classes = {element.get("class") for element in root.iter()}
    assert {"series series-succeeded", "series series-failed"} <= classes
    assert {"swatch series-succeeded", "swatch series-failed"} <= classes
    assert tick_labels(render_svg("t", hour, lines), "legend") == ["succeeded", "failed"]


async def test_an_unknown_range_says_which_ones_exist() -> None:
    """Checked before any query: no connection is needed to refuse it."""
    with pytest.raises(charts.UnknownRange, match="'month': choose one of hour, day, week"):
        await charts.overview_charts(cast(DictConnection, None), "month")
