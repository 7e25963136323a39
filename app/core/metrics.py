"""Operator figures for `/metrics`: counters and histograms that every process adds to the
store in batches, and the Prometheus text exposition (format 0.0.4).

A hot path (a request, a job run) only adds to a dict in its own process (`Tally`). Every
few seconds, and at shutdown, a process moves its whole tally into one store hash in one
MULTI/EXEC round trip, so the figures of all granian workers, replicas and `keel worker`
processes add up in one place and a scrape served by any process shows the whole
deployment. The totals live as long as the store does: a Valkey restart (or restarting an
embedded `keel serve`) starts them from zero, which Prometheus reads as a counter reset.

What a scrape shows is the families in `METRICS` (an `app.core.registry.Registry`): a
stored family (counter, histogram) is read from those totals, a gauge from its `read` at
scrape time. Keel's domains add theirs at import; a plugin adds and removes its own while
Keel runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.registry import KEEL, Registry
from app.core.store import Store
from app.core.tasks import cancel_and_wait, stop_if_cancelled

log = logging.getLogger("keel.metrics")

TOTALS_KEY = "metrics:totals"
"""The store hash holding every counter and histogram of the deployment."""
FLUSH_SECONDS = 2.0
MEDIA_TYPE = "text/plain; version=0.0.4"
"""Litestar adds `; charset=utf-8` to text media types."""
SUM = "sum"


def format_value(value: float) -> str:
    """A sample value as the exposition writes it (integers without a decimal point)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class Metric:
    """One metric family: its name, type, help text, label names and (histograms) buckets."""

    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    bounds: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Each bucket's `le` as written in the exposition, then `+Inf`."""

    def __post_init__(self) -> None:
        bounds = (*(format_value(b) for b in self.buckets), "+Inf")
        object.__setattr__(self, "bounds", bounds)


Samples = Iterable[tuple[tuple[str, ...], float]]
"""A gauge's samples: (label values, value) pairs."""
R = TypeVar("R")


class Scrape:
    """What gauges read from while one scrape is answered: its database session and the
    store; `shared` runs a load once for all the families that need it."""

    def __init__(self, session: AsyncSession, store: Store, process: Any = None) -> None:
        self.session = session
        self.store = store
        self.process = process
        """The serving process's runtime, for gauges of this process (its pools)."""
        self._shared: dict[Callable[..., Any], Any] = {}

    async def shared(self, load: Callable[[Scrape], Awaitable[R]]) -> R:
        if load not in self._shared:
            self._shared[load] = await load(self)
        result: R = self._shared[load]
        return result


@dataclass(frozen=True)
class Family:
    """A family `/metrics` shows: stored (counters and histograms every process adds to the
    store's totals) when `read` is None, else a gauge whose samples `read` gives."""

    metric: Metric
    read: Callable[[Scrape], Awaitable[Samples]] | None = None


METRICS: Registry[str, Family] = Registry("metric family", key=lambda family: family.metric.name)


def stored(metric: Metric, owner: str = KEEL) -> Metric:
    """Register a counter or histogram that processes add to with a `Tally`."""
    METRICS.add(owner, Family(metric))
    return metric


def gauge(
    metric: Metric, read: Callable[[Scrape], Awaitable[Samples]], owner: str = KEEL
) -> Metric:
    """Register a gauge read at scrape time."""
    METRICS.add(owner, Family(metric, read))
    return metric


Key = tuple[str, tuple[str, ...], str]
"""(metric name, label values, part): part is "" for a counter, a bucket's `le` or "sum"."""


def counter_key(metric: Metric, labels: tuple[str, ...]) -> Key:
    """The key `Tally.add(metric, labels)` counts under, for a caller that counts the same
    thing on every request: `tally.pending[key] += 1` is the cheapest add."""
    return (metric.name, labels, "")


class Tally:
    """This process's increments not yet in the store. Adding costs a dict update."""

    def __init__(self) -> None:
        self.pending: defaultdict[Key, int | float] = defaultdict(int)

    def add(self, metric: Metric, labels: tuple[str, ...], amount: int = 1) -> None:
        self.pending[(metric.name, labels, "")] += amount

    def observe(self, metric: Metric, labels: tuple[str, ...], value: float) -> None:
        """One observation of a histogram: its bucket (not cumulated) and the sum."""
        pending = self.pending
        pending[(metric.name, labels, metric.bounds[bisect_left(metric.buckets, value)])] += 1
        pending[(metric.name, labels, SUM)] += value

    def merge(self, counts: Mapping[Key, int | float]) -> None:
        for key, amount in counts.items():
            self.pending[key] += amount

    def fold(self) -> None:
        """Bring figures kept in another shape into `pending` (see RequestTally)."""

    def take_minutes(self) -> dict[str, dict[str, int | float]]:
        """Per-minute counts to add to the store with the totals: {hash key: fields}."""
        return {}

    def keep_minutes(self, minutes: Mapping[str, Mapping[str, int | float]]) -> None:
        """Take back per-minute counts the store did not take (see RequestTally)."""

    async def flush(self, store: Store) -> None:
        """Move everything into the store in one round trip; kept for the next try when
        the store does not answer."""
        self.fold()
        for labels, count in store.take_failures().items():
            self.add(STORE_FAILURES, labels, count)
        minutes = self.take_minutes()
        if not self.pending and not minutes:
            return
        pending, self.pending = self.pending, defaultdict(int)
        fields = {  # a sum is always a float field (HINCRBYFLOAT), a count an integer one
            json.dumps([name, labels, part]): float(v) if part == SUM else v
            for (name, labels, part), v in pending.items()
        }
        try:
            await store.incr_hashes(
                {TOTALS_KEY: fields, **minutes},
                {key: MINUTE_TTL_SECONDS for key in minutes},
            )
        except Exception as exc:  # never let figures break a heartbeat or a scrape
            self.merge(pending)
            self.keep_minutes(minutes)
            log.warning("figures not stored; kept for the next try", extra={"error": repr(exc)})

    async def flush_regularly(self, store: Store, every: float = FLUSH_SECONDS) -> None:
        while True:
            stop_if_cancelled()
            await asyncio.sleep(every)
            await self.flush(store)


STORE_FAILURES = stored(
    Metric(
        "keel_store_failures_total",
        "counter",
        "Store commands that failed, by command and reason: unanswered (no answer within the "
        "socket timeout, or no connection), skipped (the store was taken for down), refused "
        "(an error answer: full, read-only, a wrong password). Counted in each process and "
        "added here once the store answers again.",
        ("command", "reason"),
    )
)

# -- HTTP ----------------------------------------------------------------------------

HTTP_REQUESTS = stored(
    Metric(
        "keel_http_requests_total",
        "counter",
        "HTTP requests answered, by method, route template and status class.",
        ("method", "route", "status_class"),
    )
)
HTTP_DURATION = stored(
    Metric(
        "keel_http_request_duration_seconds",
        "histogram",
        "Time from receiving an HTTP request to the end of its response, by method and route "
        "template.",
        ("method", "route"),
        (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    )
)
UNMATCHED = "unmatched"
"""The route label of a request no route matched (404, 405): raw paths are unbounded."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")
_BUCKET_ROW = (*HTTP_DURATION.bounds, SUM)


def status_class(status: int) -> str:
    return _STATUS_CLASSES[status // 100] if 100 <= status < 600 else "5xx"


# -- per minute (analytics) ----------------------------------------------------------

MINUTE_PREFIX = "analytics:minute:"
"""Store hashes of one minute's counts, `analytics:minute:<minutes since the epoch>`: the
processes add to them, the analytics roll-up takes closed minutes into the database."""
MINUTE_TTL_SECONDS = 3 * 86400
"""A minute hash nobody took (no worker ran) is dropped by the store after this."""
VIEWS_FIELD = "views"
"""The field of a minute hash counting entry views (content's `ViewCounts` adds to it)."""
LATENCY_BUCKETS = HTTP_DURATION.buckets
"""Upper bounds (seconds) of the latency buckets kept per minute: the `/metrics` ones."""
ROUTE_GROUPS = ("public", "admin", "api", "plugin", "other")
"""Keel's route groups as analytics counts them: the public site, the admin pages, the JSON
API (/api/v1), plugins (/api/plugins, /p, /admin/plugins) and the rest (health, metrics,
static files, the OpenAPI document, and requests no route matched)."""
_GROUP_PREFIXES = (
    ("/api/plugins", "plugin"),
    ("/p", "plugin"),
    ("/admin/plugins", "plugin"),
    ("/api", "api"),
    ("/admin", "admin"),
    ("/health", "other"),
    ("/metrics", "other"),
    ("/static", "other"),
    ("/schema", "other"),
)


def route_group(route: str) -> str:
    """The group of a route template, matching whole path segments (`/admin` and
    `/admin/…`, never `/administer`)."""
    if route == UNMATCHED:
        return "other"
    for prefix, group in _GROUP_PREFIXES:
        if route == prefix or route.startswith(prefix + "/"):
            return group
    return "public"


def minute_key(minute: int) -> str:
    return f"{MINUTE_PREFIX}{minute}"


def minute_field(group: str, status_class: str, part: str) -> str:
    """A field of a minute hash: `<group>|<status class>|<bucket index or "sum">`."""
    return f"{group}|{status_class}|{part}"


class RequestTally(Tally):
    """A web process's tally: requests are kept as one row per (method, route, status),
    so counting one costs a single dict look-up; flushed in the background every
    FLUSH_SECONDS (started at start-up) and one last time at shutdown.

    The rows also make the per-minute counts of analytics: they are folded whenever a
    request arrives in a new minute, so each fold covers one minute only, and land in
    that minute's store hash by route group and status class (`take_minutes`)."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.requests: dict[tuple[str, str, int], list[float]] = {}
        """Per (method, route, status): a count per duration bucket, then the sum."""
        self.minutes: defaultdict[str, defaultdict[str, int | float]] = defaultdict(
            lambda: defaultdict(int)
        )
        """Per-minute counts not yet in the store: {minute hash key: {field: amount}}."""
        self._minute = -1
        """The minute (since the epoch) the rows in `requests` were counted in."""
        self._minute_ends = 0.0
        self._groups: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def record_request(
        self, method: str, route: str, status: int, seconds: float, at: float
    ) -> None:
        """Count one answered request that ended at `at` (epoch seconds): all that
        `/metrics` and analytics cost a request."""
        if at >= self._minute_ends or at < self._minute_ends - 60:
            self._turn_minute(at)
        if method not in _METHODS:
            method = "other"
        row = self.requests.get((method, route, status))
        if row is None:
            row = self.requests[(method, route, status)] = [0] * len(_BUCKET_ROW)
        row[bisect_left(HTTP_DURATION.buckets, seconds)] += 1
        row[-1] += seconds

    def _turn_minute(self, at: float) -> None:
        self.fold()
        self._minute = int(at // 60)
        self._minute_ends = (self._minute + 1) * 60.0

    def fold(self) -> None:
        rows, self.requests = self.requests, {}
        if not rows:
            return
        pending = self.pending
        minute = self.minutes[minute_key(self._minute)]
        groups = self._groups
        for (method, route, status), row in rows.items():
            kind = status_class(status)
            count = sum(row[:-1])
            pending[(HTTP_REQUESTS.name, (method, route, kind), "")] += count
            labels = (method, route)
            group = groups.get(route)
            if group is None:
                group = groups[route] = route_group(route)
            for index, (bound, n) in enumerate(zip(HTTP_DURATION.bounds, row[:-1], strict=True)):
                if n:
                    pending[(HTTP_DURATION.name, labels, bound)] += n
                    minute[minute_field(group, kind, str(index))] += n
            pending[(HTTP_DURATION.name, labels, SUM)] += row[-1]
            minute[minute_field(group, kind, SUM)] += float(row[-1])

    def take_minutes(self) -> dict[str, dict[str, int | float]]:
        minutes, self.minutes = self.minutes, defaultdict(lambda: defaultdict(int))
        return {key: dict(fields) for key, fields in minutes.items()}

    def keep_minutes(self, minutes: Mapping[str, Mapping[str, int | float]]) -> None:
        for key, fields in minutes.items():
            kept = self.minutes[key]
            for name, amount in fields.items():
                kept[name] += amount

    def start(self) -> None:
        self._task = asyncio.create_task(self.flush_regularly(self.store))

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.flush(self.store)


# -- exposition ------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


class Exposition:
    """Text in the Prometheus exposition format 0.0.4, family by family."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, metric: Metric) -> None:
        self.lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
        self.lines.append(f"# TYPE {metric.name} {metric.kind}")

    def sample(self, name: str, labels: Iterable[tuple[str, str]] = (), value: float = 0.0) -> None:
        pairs = ",".join(f'{key}="{_escape_label(v)}"' for key, v in labels)
        self.lines.append(
            f"{name}{{{pairs}}} {format_value(value)}" if pairs else f"{name} {format_value(value)}"
        )

    def gauge(self, metric: Metric, samples: Iterable[tuple[tuple[str, ...], float]]) -> None:
        self.family(metric)
        for values, value in samples:
            self.sample(metric.name, zip(metric.labels, values, strict=True), value)

    def totals(self, metrics: Sequence[Metric], stored: Mapping[str, float]) -> None:
        """Counters and histograms from the store's totals (fields of `Tally.flush`)."""
        series = stored_series(stored)
        for metric in metrics:
            self.family(metric)
            for values, parts in sorted(series.get(metric.name, {}).items()):
                if len(values) != len(metric.labels):
                    continue  # written by a version with other labels
                labels = list(zip(metric.labels, values, strict=True))
                if metric.kind == "histogram":
                    self._histogram(metric, labels, parts)
                else:
                    self.sample(metric.name, labels, parts.get("", 0))

    def _histogram(
        self, metric: Metric, labels: list[tuple[str, str]], parts: Mapping[str, float]
    ) -> None:
        """Buckets cumulated from the stored per-bucket counts; a bound no longer declared
        counts under every declared bound above it, so `le` stays true."""
        counts = [(float(part), n) for part, n in parts.items() if part not in ("", SUM)]
        for bound, text in zip((*metric.buckets, math.inf), metric.bounds, strict=True):
            below = sum(n for at, n in counts if at <= bound)
            self.sample(metric.name + "_bucket", [*labels, ("le", text)], below)
        self.sample(metric.name + "_sum", labels, parts.get(SUM, 0.0))
        self.sample(metric.name + "_count", labels, sum(n for _, n in counts))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


Series = dict[str, dict[tuple[str, ...], dict[str, float]]]
"""The store's totals by metric name, label values and part (see `Key`)."""


def stored_series(stored: Mapping[str, float]) -> Series:
    """The store's totals (fields of `Tally.flush`) by metric, label values and part."""
    series: Series = defaultdict(dict)
    for raw, value in stored.items():
        try:
            name, labels, part = json.loads(raw)
        except (ValueError, TypeError):
            continue
        series[name].setdefault(tuple(labels), {})[part] = value
    return series


async def counter_totals(
    store: Store, own: Tally, *metrics: Metric
) -> list[dict[tuple[str, ...], float]]:
    """Each counter's totals of the whole deployment by label values, in the order asked;
    this process's tally goes to the store first, so what it counted up to now is included.
    One flush and one read of the store for all of them."""
    await own.flush(store)
    series = stored_series(await store.read_fields(TOTALS_KEY))
    return [
        {labels: parts.get("", 0) for labels, parts in series.get(metric.name, {}).items()}
        for metric in metrics
    ]


async def exposition(scrape: Scrape, totals: Mapping[str, float]) -> str:
    """Every registered family: the stored ones from `totals`, then each gauge's samples."""
    families = list(METRICS)
    out = Exposition()
    out.totals([family.metric for family in families if family.read is None], totals)
    for family in families:
        if family.read is not None:
            out.gauge(family.metric, await family.read(scrape))
    return out.text()
