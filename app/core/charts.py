"""The geometry of the server-rendered SVG charts (`templates/components/charts.html`):
values per time bucket to coordinates in a fixed viewBox, axis ticks at round numbers and
time labels in the site's zone. Pure functions: no request, no template, no domain."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from app.core.zones import zone_abbreviation

WIDTH, HEIGHT = 640.0, 220.0
"""The viewBox; the SVG is drawn at the width of its box (CSS) and keeps this ratio."""
LEFT, RIGHT, TOP, BOTTOM = 56.0, 14.0, 28.0, 34.0
"""Room for the value axis (left) and the time axis (bottom)."""


def nice_step(rough: float) -> float:
    """The round number (1, 2 or 5 times a power of ten) at or above `rough`."""
    if rough <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(rough))
    for factor in (1, 2, 5, 10):
        if factor * power >= rough:
            return float(factor * power)
    return 10.0 * power


def nice_ticks(highest: float, count: int = 4) -> list[float]:
    """Ticks from 0 to a round number at or above `highest`, about `count` steps apart
    (0 to 1 for an empty chart)."""
    step = nice_step(highest / count) if highest > 0 else 0.25
    if highest > 0 and highest >= 1 and step < 1:
        step = 1.0
    steps = max(1, math.ceil(highest / step)) if highest > 0 else 4
    return [round(step * i, 10) for i in range(steps + 1)]


def format_number(value: float) -> str:
    """A value as an axis or a title writes it: 1200 as 1.2k, 0.25 as 0.25, 3.0 as 3."""
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if abs(value) >= 10_000:
        return f"{value / 1000:.3g}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def time_label(at: datetime, bucket_seconds: int, span_seconds: int) -> str:
    """A bucket's start as the time axis writes it (in `at`'s zone): the hour and minute
    within a day, the day and hour within a month, the day for daily buckets."""
    if bucket_seconds >= 86400:
        return at.strftime("%b %-d")
    if span_seconds > 86400:
        return at.strftime("%b %-d %H:%M")
    return at.strftime("%H:%M")


def full_time(at: datetime, bucket_seconds: int) -> str:
    """A bucket's start for a point's title: with the date, and the zone's abbreviation."""
    if bucket_seconds >= 86400:
        return at.strftime("%b %-d %Y")
    return f"{at.strftime('%b %-d %H:%M')} {zone_abbreviation(at)}"


@dataclass(frozen=True)
class Line:
    name: str
    """What the line counts ("requests", "p95"), as the legend and the table say it."""
    css_class: str
    """Its colour and stroke come from this class (static/css: no inline style)."""
    path: str
    """An SVG path; a bucket without a value (None) breaks the line."""
    dots: tuple[tuple[float, float], ...]
    """Points standing alone (no neighbour to draw a line to), drawn as dots."""


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Column:
    """One bucket: its hit area (x, width) carrying a readable title, and the table row."""

    x: float
    width: float
    title: str
    label: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Chart:
    width: float
    height: float
    left: float
    top: float
    plot_width: float
    plot_height: float
    unit: str
    lines: tuple[Line, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    columns: tuple[Column, ...]
    empty: bool
    """Nothing was counted in the whole range (the page shows an empty state)."""

    @property
    def bottom(self) -> float:
        return self.top + self.plot_height

    @property
    def right(self) -> float:
        return self.left + self.plot_width


def _path(
    points: Sequence[tuple[float, float] | None],
) -> tuple[str, tuple[tuple[float, float], ...]]:
    parts: list[str] = []
    dots: list[tuple[float, float]] = []
    run: list[tuple[float, float]] = []
    for point in [*points, None]:
        if point is not None:
            run.append(point)
            continue
        if len(run) == 1:
            dots.append(run[0])
        elif run:
            parts.append("M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in run))
        run = []
    return " ".join(parts), tuple(dots)


def line_chart(
    starts: Sequence[datetime],
    bucket_seconds: int,
    series: Mapping[str, Sequence[float | None]],
    unit: str,
    classes: Mapping[str, str] | None = None,
    x_labels: int = 6,
    zone: tzinfo = UTC,
) -> Chart:
    """A chart of one line per entry of `series` (name -> a value per bucket of `starts`,
    None where there is none), on a value axis from 0 in `unit`. A name reads after its
    value in titles ("120 requests", "85 ms at p95"); times read in `zone`."""
    starts = [at.astimezone(zone) for at in starts]
    count = max(1, len(starts))
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    values = [v for vs in series.values() for v in vs if v is not None]
    highest = max(values, default=0.0)
    ticks = nice_ticks(highest)
    top_value = ticks[-1] or 1.0
    step = plot_width / count

    def x(index: int) -> float:
        return LEFT + step * (index + 0.5)

    def y(value: float) -> float:
        return TOP + plot_height * (1 - value / top_value)

    lines = []
    for number, (name, vs) in enumerate(series.items()):
        path, dots = _path([None if v is None else (x(i), y(v)) for i, v in enumerate(vs)])
        css = (classes or {}).get(name, f"chart-line-{number + 1}")
        lines.append(Line(name, css, path, dots))
    span = bucket_seconds * len(starts)
    every = max(1, math.ceil(count / x_labels))
    x_ticks = tuple(
        Tick(x(i), time_label(at, bucket_seconds, span))
        for i, at in enumerate(starts)
        if i % every == 0
    )
    columns = []
    for i, at in enumerate(starts):
        shown = [(name, vs[i]) for name, vs in series.items() if i < len(vs)]
        parts = ", ".join(
            f"{name}: no data" if v is None else f"{format_number(v)} {name}" for name, v in shown
        )
        columns.append(
            Column(
                LEFT + step * i,
                step,
                f"{full_time(at, bucket_seconds)} — {parts}",
                full_time(at, bucket_seconds),
                tuple("no data" if v is None else format_number(v) for _, v in shown),
            )
        )
    return Chart(
        WIDTH,
        HEIGHT,
        LEFT,
        TOP,
        plot_width,
        plot_height,
        unit,
        tuple(lines),
        tuple(Tick(y(t), format_number(t)) for t in ticks),
        x_ticks,
        tuple(columns),
        empty=not any(values),
    )
