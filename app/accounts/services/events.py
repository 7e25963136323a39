"""Accounts' events: an account created, deleted or given another role, for whoever
subscribed (plugins, through `keel.plugin`).

`users.py` emits them on the session of the change, so every path emits them: the API, the
admin pages, the first-run setup, registration, the CLI and the CSV import. They are
delivered after the COMMIT, in the process that committed, and never for a change that
rolled back (app/core/events.py). Payloads hold plain values: never the ORM object, the
password hash or a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from app.accounts.models import User
from app.core.clock import current_clock
from app.core.events import emit

USER_CREATED = "user.created"
"""An account was created (by an admin or editor, registration, the first run, the CLI, an
import)."""
USER_DELETED = "user.deleted"
"""An account was deleted."""
USER_ROLE_CHANGED = "user.role_changed"
"""An account was given another role (`previous_role` is the one it had)."""

USER_EVENTS = (USER_CREATED, USER_DELETED, USER_ROLE_CHANGED)


@dataclass(frozen=True)
class UserEvent:
    """An account as the change left it (`user.deleted`: as it was)."""

    name: str
    """The event: `user.created`, `user.deleted` or `user.role_changed`."""
    id: UUID
    username: str
    display_name: str
    email: str
    role: str
    """`viewer`, `editor` or `admin`."""
    previous_role: str | None
    """`user.role_changed`: the role it had; None for the other events."""
    is_active: bool
    at: datetime
    """When the change was made (UTC)."""


def emit_user_event(session: Any, name: str, user: User, previous_role: str | None = None) -> None:
    """Note `name` about `user` as it is now, delivered if the session commits."""
    emit(
        session,
        name,
        UserEvent(
            name=name,
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            email=user.email,
            role=user.role,
            previous_role=previous_role,
            is_active=user.is_active,
            at=current_clock().now(),
        ),
    )
