"""Tables of analytics: request counts and entry views per period, rolled up from the
store's per-minute hashes by the `analytics_rollup` job."""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.base import AdvancedDeclarativeBase
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import BigInteger, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

MINUTE, HOUR, DAY = 60, 3600, 86400
PERIODS = (MINUTE, HOUR, DAY)


class RequestStat(AdvancedDeclarativeBase):
    """Requests of one route group and status class in one period (a minute, an hour or a
    day, `period_seconds`) starting at `start`: how many, their total time, and how many
    fell in each latency bucket (`app.core.metrics.LATENCY_BUCKETS`, then beyond)."""

    __tablename__ = "request_stats"

    period_seconds: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    route_group: Mapped[str] = mapped_column(String(16), primary_key=True)
    status_class: Mapped[str] = mapped_column(String(3), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    seconds: Mapped[float] = mapped_column(Float)
    buckets: Mapped[list[int]] = mapped_column(JsonB)


class ViewStat(AdvancedDeclarativeBase):
    """Entry views counted in one period starting at `start`."""

    __tablename__ = "view_stats"

    period_seconds: Mapped[int] = mapped_column(Integer, primary_key=True)
    start: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), primary_key=True)
    views: Mapped[int] = mapped_column(BigInteger)
