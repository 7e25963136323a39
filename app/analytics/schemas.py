"""The analytics API's answer shapes (documented in the OpenAPI document)."""

from __future__ import annotations

import msgspec


class RequestPointOut(msgspec.Struct):
    start: str
    """The bucket's start, UTC (ISO 8601)."""
    count: int
    """Requests answered in the bucket."""
    errors: int
    """Of them, answered with a 5xx status."""
    p50_ms: float | None
    """Median latency in milliseconds, estimated from latency buckets; null without requests."""
    p95_ms: float | None
    p99_ms: float | None


class RequestSeriesOut(msgspec.Struct):
    bucket_seconds: int
    points: list[RequestPointOut]
    """Every bucket of the range, oldest first (zeros where nothing happened)."""


class ContentPointOut(msgspec.Struct):
    start: str
    views: int
    """Entry views counted in the bucket (rendered and cached answers alike)."""
    published: int
    """Entries whose publication time fell in the bucket."""


class ContentSeriesOut(msgspec.Struct):
    bucket_seconds: int
    points: list[ContentPointOut]


class JobPointOut(msgspec.Struct):
    start: str
    completed: int
    """Jobs that finished successfully in the bucket."""
    failed: int
    """Jobs that failed for good (failed or dead) in the bucket."""
    cancelled: int
    retried: int
    """Jobs finished in the bucket after more than one attempt."""
    wait_p50_ms: float | None
    """Median time from due to started, of the jobs that ran; null when none."""
    wait_p95_ms: float | None
    run_p50_ms: float | None
    """Median time from started to finished."""
    run_p95_ms: float | None


class JobSeriesOut(msgspec.Struct):
    bucket_seconds: int
    points: list[JobPointOut]
