"""The audit log as people read it: who (linked to the account), what ("published post
“Hello”"), the target linked to its page while it exists ("(deleted)" otherwise), and the
changes as old → new rows.

The names come from the database, one query per kind of resource for a whole page of
entries (never one per row). Each domain says how its resources are named and where they
are shown with `AUDIT_RESOURCES.add(owner, AuditResource(...))`: the log itself knows none
of them (accounts sit below content and jobs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import ApiKey, AuditEntry, User
from app.core.registry import KEEL, Registry

Names = Callable[[AsyncSession, list[str]], Awaitable[dict[str, str]]]
"""The names of the resources with these ids that still exist, by id."""


@dataclass(frozen=True)
class AuditResource:
    """A kind of resource audit entries name (`resource_type`)."""

    type: str
    noun: str
    """How the action's sentence calls it: `post`, `user`, `API key`."""
    names: Names | None = None
    route: str | None = None
    """The admin page of one such resource (a route name), with its id as `parameter`."""
    parameter: str | None = None


AUDIT_RESOURCES: Registry[str, AuditResource] = Registry(
    "audit resource", key=lambda resource: resource.type
)

VERBS = {
    "login": "signed in",
    "logout": "signed out",
    "login_failed": "failed to sign in",
    "login_throttled": "was stopped signing in too often",
    "signed_out_everywhere": "signed out everywhere",
    "enqueue": "enqueued",
    "retry": "retried",
    "cancel": "cancelled",
    "changed": "changed",
}
DETAIL_NAMES = ("title", "name", "username", "email", "original_name", "slug")
"""Details that name a resource, for one that is gone."""


@dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any


@dataclass
class AuditRow:
    """One entry as the page shows it."""

    entry: AuditEntry
    actor: str
    actor_id: UUID | None
    """Set while the account exists (the name links to it)."""
    action: str
    """What was done, in words: `published`, `signed in`."""
    noun: str | None = None
    target: str | None = None
    """The resource's name (from the database, or the entry's details when it is gone)."""
    route: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    changes: list[Change] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    """What else the entry holds, shown as label and value rows."""


def _verb(action: str) -> str:
    last = action.rsplit(".", 1)[-1]
    return VERBS.get(last, last.replace("_", " "))


def _changes(details: dict[str, Any]) -> tuple[list[Change], dict[str, Any]]:
    """`{"old": …, "new": …}` (a setting) and `{"changes": {field: [old, new]}}` (an
    account) as rows; the rest of the details apart."""
    rest = dict(details)
    changes: list[Change] = []
    if "old" in rest and "new" in rest:
        old, new = rest.pop("old"), rest.pop("new")
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    changes.append(Change(key, old.get(key), new.get(key)))
        else:
            changes.append(Change("value", old, new))
    listed = rest.get("changes")
    if isinstance(listed, dict):
        rest.pop("changes")
        for key, pair in listed.items():
            if isinstance(pair, list | tuple) and len(pair) == 2:
                changes.append(Change(key, pair[0], pair[1]))
            else:
                changes.append(Change(key, None, pair))
    return changes, rest


async def readable_audit(session: AsyncSession, entries: Sequence[AuditEntry]) -> list[AuditRow]:
    """`entries` as rows with names and links: one query for the accounts and one per kind
    of resource, whatever the number of entries."""
    user_ids = {entry.user_id for entry in entries if entry.user_id is not None}
    actors = await _user_names(session, [str(i) for i in user_ids]) if user_ids else {}
    wanted: dict[str, set[str]] = {}
    for entry in entries:
        if entry.resource_type and entry.resource_id:
            wanted.setdefault(entry.resource_type, set()).add(entry.resource_id)
    found: dict[str, dict[str, str]] = {}
    for kind, ids in wanted.items():
        resource = AUDIT_RESOURCES.get(kind)
        if resource is not None and resource.names is not None:
            found[kind] = await resource.names(session, sorted(ids))
    return [_row(entry, actors, found) for entry in entries]


def _row(entry: AuditEntry, actors: dict[str, str], found: dict[str, dict[str, str]]) -> AuditRow:
    changes, details = _changes(entry.details or {})
    user_id = str(entry.user_id) if entry.user_id else None
    row = AuditRow(
        entry=entry,
        actor=actors.get(user_id, entry.actor) if user_id else (entry.actor or "—"),
        actor_id=entry.user_id if user_id in actors else None,
        action=_verb(entry.action),
        changes=changes,
        details=details,
    )
    kind, ident = entry.resource_type, entry.resource_id
    if not kind or (kind == "user" and ident == user_id and entry.action.startswith("auth.")):
        return row  # "admin signed in", not "admin signed in user admin"
    resource = AUDIT_RESOURCES.get(kind) or AuditResource(kind, kind.replace("_", " "))
    row.noun = resource.noun
    if not ident:
        return row
    names = found.get(kind)
    if names is None:  # a resource without rows of its own (a setting): its id names it
        row.target = ident
        if resource.route and not resource.parameter:
            row.route = resource.route
        return row
    name = names.get(ident)
    if name is None:
        row.deleted = True
        row.target = next((str(details[k]) for k in DETAIL_NAMES if details.get(k)), ident)
        return row
    row.target = name
    if resource.route and resource.parameter:
        row.route = resource.route
        row.parameters = {resource.parameter: _parameter(ident)}
    return row


def _parameter(ident: str) -> Any:
    if ident.isdigit():
        return int(ident)
    try:
        return UUID(ident)
    except ValueError:
        return ident


def uuids(ids: Iterable[str]) -> list[UUID]:
    """The ids that are UUIDs (an entry may hold anything a plugin wrote)."""
    found = []
    for ident in ids:
        try:
            found.append(UUID(ident))
        except ValueError:
            continue
    return found


async def _user_names(session: AsyncSession, ids: list[str]) -> dict[str, str]:
    query = select(User.id, User.display_name, User.username).where(User.id.in_(uuids(ids)))
    return {str(i): shown or name for i, shown, name in await session.execute(query)}


async def _key_names(session: AsyncSession, ids: list[str]) -> dict[str, str]:
    query = select(ApiKey.id, ApiKey.name).where(ApiKey.id.in_(uuids(ids)))
    return {str(i): name for i, name in await session.execute(query)}


AUDIT_RESOURCES.add(KEEL, AuditResource("user", "user", _user_names, "admin:user_edit", "user_id"))
AUDIT_RESOURCES.add(KEEL, AuditResource("api_key", "API key", _key_names))
AUDIT_RESOURCES.add(KEEL, AuditResource("setting", "setting", None, "admin:settings"))
