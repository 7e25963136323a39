"""Counts of accounts for the admin dashboard: who there is, by role, and who joined lately."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from sqlalchemy import Integer, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import ASSIGNABLE_ROLES, User


@dataclass(frozen=True)
class UserCounts:
    by_role: dict[str, int]
    """Active accounts by role, every assignable role present (0 when none), highest first."""
    inactive: int
    """Deactivated accounts, whatever their role."""
    joined_last_day: int
    joined_last_week: int

    @property
    def active(self) -> int:
        return sum(self.by_role.values())


async def user_counts(session: AsyncSession, now: datetime) -> UserCounts:
    """Accounts by role and activity, and the sign-ups of the last 24 hours and 7 days, in
    one query."""
    day, week = now - timedelta(days=1), now - timedelta(days=7)
    rows = await session.execute(
        select(
            User.role,
            User.is_active,
            func.count(),
            func.sum((User.created_at >= day).cast(Integer)),
            func.sum((User.created_at >= week).cast(Integer)),
        ).group_by(User.role, User.is_active)
    )
    by_role = {role.name: 0 for role in sorted(ASSIGNABLE_ROLES, reverse=True)}
    inactive = joined_day = joined_week = 0
    for role, active, count, last_day, last_week in rows:
        if active:
            by_role[role] = by_role.get(role, 0) + count
        else:
            inactive += count
        joined_day += last_day or 0
        joined_week += last_week or 0
    return UserCounts(by_role, inactive, joined_day, joined_week)


async def usernames(session: AsyncSession, ids: Collection[UUID]) -> dict[UUID, str]:
    """The usernames of the accounts of `ids` that still exist."""
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {user_id: username for user_id, username in rows}
