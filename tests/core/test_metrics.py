"""Figures and their exposition: app/core/metrics.py (the store part on both legs)."""

from __future__ import annotations

import math
import re

from app.core.metrics import (
    HTTP_DURATION,
    HTTP_REQUESTS,
    TOTALS_KEY,
    Exposition,
    Metric,
    RequestTally,
    Tally,
)
from app.core.store import MemoryStore, Store

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(
    rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (-?[0-9.e+-]+|[+-]Inf|NaN)$"
)
_COMMENT = re.compile(rf"^# (?:HELP {_NAME} .*|TYPE ({_NAME}) (counter|gauge|histogram))$")
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_exposition(text: str) -> Samples:
    """Every line of `text` must be a HELP/TYPE comment or `name{labels} value` whose
    family was typed before it; returns the samples by name and labels."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    samples: Samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            comment = _COMMENT.match(line)
            assert comment, f"not a HELP or TYPE line: {line!r}"
            if comment.group(1):
                typed[comment.group(1)] = comment.group(2)
            continue
        sample = _SAMPLE.match(line)
        assert sample, f"not a sample line: {line!r}"
        name, body, value = sample.group(1), sample.group(2) or "", sample.group(7)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or typed.get(family) == "histogram", f"untyped sample: {line!r}"
        labels = tuple(
            (key, re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], raw))
            for key, raw in re.findall(_LABEL, body)
        )
        key = (name, tuple(sorted(labels)))
        assert key not in samples, f"duplicate sample: {line!r}"
        samples[key] = float(value)
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


WAIT = Metric("test_wait_seconds", "histogram", "Test waits.", ("kind",), (0.1, 1.0))
DONE = Metric("test_done_total", "counter", "Test counts.", ("kind",))


def test_label_values_and_help_are_escaped_so_the_text_parses_back() -> None:
    out = Exposition()
    odd = 'quote " backslash \\ newline \n end'
    metric = Metric("test_info", "gauge", "Help with a \\ and a\nsecond line.", ("name",))
    out.gauge(metric, [((odd,), 1), (("plain",), 2.5)])
    text = out.text()
    assert "# HELP test_info Help with a \\\\ and a\\nsecond line.\n" in text
    samples = parse_exposition(text)
    assert value(samples, "test_info", name=odd) == 1
    assert value(samples, "test_info", name="plain") == 2.5


async def test_histograms_are_cumulative_with_a_count_and_a_sum() -> None:
    memory, tally = MemoryStore(), Tally()
    for seconds in (0.05, 0.5, 0.7, 30.0):
        tally.observe(WAIT, ("a",), seconds)
    tally.add(DONE, ("a",), 3)
    await tally.flush(memory)
    out = Exposition()
    out.totals([WAIT, DONE], await memory.read_fields(TOTALS_KEY))
    samples = parse_exposition(out.text())
    bucket = "test_wait_seconds_bucket"
    assert [value(samples, bucket, kind="a", le=le) for le in ("0.1", "1", "+Inf")] == [1, 3, 4]
    assert value(samples, "test_wait_seconds_count", kind="a") == 4
    assert math.isclose(value(samples, "test_wait_seconds_sum", kind="a") or 0, 31.25)
    assert value(samples, "test_done_total", kind="a") == 3


async def test_tallies_of_several_processes_add_up_in_the_store(store: Store) -> None:
    first, second = RequestTally(store), Tally()
    first.record_request("GET", "/blog/{slug}", 200, 0.004, 1e9)
    first.record_request("GET", "/blog/{slug}", 304, 0.0001, 1e9)
    first.record_request("BREW", "/blog/{slug}", 405, 0.0001, 1e9)
    second.observe(WAIT, ("a",), 0.5)
    await first.flush(store)
    await second.flush(store)
    first.record_request("GET", "/blog/{slug}", 200, 2.0, 1e9)
    await first.flush(store)
    assert not first.pending and not first.requests  # nothing is counted twice

    out = Exposition()
    out.totals([HTTP_REQUESTS, HTTP_DURATION, WAIT], await store.read_fields(TOTALS_KEY))
    samples = parse_exposition(out.text())
    requests = "keel_http_requests_total"
    assert value(samples, requests, method="GET", route="/blog/{slug}", status_class="2xx") == 2
    assert value(samples, requests, method="GET", route="/blog/{slug}", status_class="3xx") == 1
    assert value(samples, requests, method="other", route="/blog/{slug}", status_class="4xx") == 1
    duration = "keel_http_request_duration_seconds"
    get = {"method": "GET", "route": "/blog/{slug}"}
    assert value(samples, duration + "_count", **get) == 3
    assert value(samples, duration + "_bucket", **get, le="0.005") == 2
    assert value(samples, duration + "_bucket", **get, le="1") == 2
    assert math.isclose(value(samples, duration + "_sum", **get) or 0, 2.0041)
    assert value(samples, "test_wait_seconds_count", kind="a") == 1
