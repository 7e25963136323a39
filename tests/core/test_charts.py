"""The chart geometry: round ticks, lines broken where a bucket has no value, a readable
title per bucket, an empty chart said to be empty."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.core.charts import HEIGHT, TOP, line_chart, nice_step, nice_ticks, time_label
from app.core.metrics import route_group

START = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)


def _starts(count: int, seconds: int = 60) -> list[datetime]:
    return [START + timedelta(seconds=seconds * i) for i in range(count)]


def test_ticks_are_round_numbers_from_zero_to_at_least_the_highest_value() -> None:
    assert nice_step(23) == 50 and nice_step(0.3) == 0.5 and nice_step(100) == 100
    assert nice_ticks(120) == [0, 50, 100, 150]
    assert nice_ticks(3) == [0, 1, 2, 3]
    assert nice_ticks(0) == [0, 0.25, 0.5, 0.75, 1.0]


def test_a_bucket_without_a_value_breaks_the_line_and_a_lone_value_is_a_dot() -> None:
    chart = line_chart(_starts(5), 60, {"p95": [10, 20, None, 30, None]}, "ms")
    (line,) = chart.lines
    assert line.path.count("M") == 1 and line.path.count("L") == 1
    assert len(line.dots) == 1
    x, y = line.dots[0]
    assert chart.left < x < chart.right and TOP <= y <= HEIGHT
    assert not chart.empty


def test_each_bucket_has_a_readable_title_and_a_table_row() -> None:
    chart = line_chart(_starts(3), 60, {"requests": [120, 0, 5], "errors": [3, 0, 0]}, "requests")
    assert chart.columns[0].title == "Dec 7 14:00 UTC — 120 requests, 3 errors"
    assert chart.columns[1].values == ("0", "0")
    assert [tick.label for tick in chart.y_ticks] == ["0", "50", "100", "150"]


def test_nothing_counted_is_an_empty_chart() -> None:
    assert line_chart(_starts(4), 60, {"views": [0, 0, 0, 0]}, "views").empty
    assert line_chart(_starts(2), 60, {"p50": [None, None]}, "ms").empty


def test_time_labels_follow_the_span() -> None:
    assert time_label(START, 60, 3600) == "14:00"
    assert time_label(START, 3600, 7 * 86400) == "Dec 7 14:00"
    assert time_label(START, 86400, 30 * 86400) == "Dec 7"


def test_route_groups_match_whole_path_segments() -> None:
    assert route_group("/") == "public"
    assert route_group("/blog/{slug:str}") == "public"
    assert route_group("/administer") == "public"
    assert route_group("/admin/users") == "admin"
    assert route_group("/admin/plugins/{name:str}/{path:path}") == "plugin"
    assert route_group("/api/v1/content") == "api"
    assert route_group("/api/plugins/{name:str}") == "plugin"
    assert route_group("/p/{name:str}") == "plugin"
    assert route_group("/health/ready") == "other"
    assert route_group("unmatched") == "other"
