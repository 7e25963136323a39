"""Importing accounts: the rules of `app.accounts.services` per row, accounts without a
usable password, and a "set your password" link e-mailed to each active one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Role, User
from app.accounts.services.audit import Actor, record
from app.accounts.services.passwords import send_password_setup
from app.accounts.services.users import (
    EMAIL_TAKEN,
    NewUser,
    check_new_user,
    insert_user,
    may_create,
    taken_logins,
)
from app.jobs.jobs.imports.common import Importer, reason
from app.jobs.jobs.imports.csvfile import Columns, Row

COLUMNS = Columns(
    allowed=("email", "name", "role", "active"),
    required=("email",),
    shown=("email", "name", "role", "active"),
)
YES = {"", "1", "true", "yes", "y"}
NO = {"0", "false", "no", "n"}


def username_from_email(email: str) -> str:
    """A username to start from: the address's local part in the allowed characters."""
    local = re.sub(r"[^A-Za-z0-9_.-]", "", email.split("@")[0])[:56].lstrip("_.-")
    return local if len(local) >= 3 else (f"{local}-user" if local else "user")


@dataclass
class NewAccount:
    row: Row
    data: NewUser
    active: bool


class UsersImporter(Importer[NewAccount]):
    columns = COLUMNS

    def check(self, row: Row, role: Role) -> NewAccount:
        values = row.values
        email = values.get("email", "").strip()
        wanted = NewUser(
            email=email,
            username=username_from_email(email),
            password="",
            role=values.get("role", "").strip().lower() or Role.viewer.name,
            display_name=values.get("name", ""),
        )
        data, problems = check_new_user(wanted, password=False)
        row.reasons += [reason(problem) for problem in problems]
        if not any(problem.field == "role" for problem in problems) and not may_create(
            role, Role[data.role]
        ):
            row.reasons.append(f"role: You cannot create an account with the {data.role} role.")
        active = values.get("active", "").strip().lower()
        if active not in YES | NO:
            row.reasons.append("active: Write yes or no (or leave it empty for yes).")
        return NewAccount(row, data, active in YES)

    def key(self, item: NewAccount) -> tuple[str, str]:
        return ("e-mail address", item.data.email)

    async def conflicts(self, session: AsyncSession, items: list[NewAccount]) -> None:
        emails, _ = await taken_logins(session, [item.data.email for item in items], [])
        for item in items:
            if item.data.email in emails:
                item.row.reasons.append(f"email: {EMAIL_TAKEN}")

    async def write(
        self,
        session: AsyncSession,
        actor: Actor,
        role: Role,
        items: list[NewAccount],
        context: dict[str, str],
    ) -> None:
        """Add the accounts (each with a free username) and enqueue their e-mails."""
        names = await _free_usernames(session, [item.data.username for item in items])
        users: list[User] = []
        for item, username in zip(items, names, strict=True):
            item.data.username = username
            user = await insert_user(session, None, item.data, is_active=item.active)
            record(
                session,
                actor,
                "user.created",
                "user",
                user.id,
                email=user.email,
                role=user.role,
                via="import",
                job_id=context["job_id"],
            )
            users.append(user)
        active = [user for user in users if user.is_active]
        await send_password_setup(session, self.store, actor, role, active, context["base_url"])


async def _free_usernames(session: AsyncSession, wanted: list[str]) -> list[str]:
    """Each wanted name, or with `-2`, `-3`, ... when an account or an earlier row has it."""
    _, taken = await taken_logins(session, [], wanted)
    given: list[str] = []
    for base in wanted:
        name, n = base, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}-{n}"
            if n % 10 == 2:  # look further ahead in one query
                _, more = await taken_logins(session, [], [f"{base}-{m}" for m in range(n, n + 10)])
                taken |= more
        taken.add(name.lower())
        given.append(name)
    return given
