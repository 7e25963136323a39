"""Accounts: creating, finding, changing and deleting users under the role rules."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from sqlalchemy import case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import ASSIGNABLE_ROLES, Role, User
from app.accounts.services.audit import Actor, record
from app.accounts.services.events import (
    USER_CREATED,
    USER_DELETED,
    USER_ROLE_CHANGED,
    emit_user_event,
)
from app.accounts.services.password_hashing import (
    UNUSABLE_PASSWORD,
    PasswordHashing,
    PasswordRuleError,
    check_password_rules,
)
from app.core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidField,
    NotFound,
    only_if_valid,
)
from app.core.pagination import Page, PageRequest, paginate
from app.site_settings.services import SettingDefinition, define

REGISTRATION_OPEN = define(
    SettingDefinition(
        "registration_open",
        bool,
        False,
        "Whether visitors may create their own accounts.",
        label="Visitors may register",
    )
)

SELF_REGISTERED_ROLES = (Role.viewer.name, Role.editor.name)
"""What a visitor's own account may be: a guest is no account (nobody signed in)."""
DEFAULT_ROLE = define(
    SettingDefinition(
        "default_role",
        str,
        Role.viewer.name,
        "The role of an account a visitor registers: viewer or editor (never admin; an admin "
        "changes a role on the Users page).",
        label="Role of registered accounts",
        validate=lambda role: None if role in SELF_REGISTERED_ROLES else "must be viewer or editor",
    )
)

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


class AccountError(DomainError):
    """A rule about accounts said no: one of the kinds below."""


class InvalidAccount(AccountError, InvalidField):
    """A field of an account (or of a filter over accounts) breaks a rule."""


class AccountNotFound(AccountError, NotFound):
    """No such account (or link to one)."""


class AccountForbidden(AccountError, Forbidden):
    """The caller's role may not make this change to this account."""


class AccountConflict(AccountError, Conflict):
    """The accounts as they are refuse the change: an address taken, the last admin."""


@dataclass
class NewUser:
    email: str
    username: str
    password: str
    role: str = Role.viewer.name
    display_name: str = ""


EMAIL_MAX_LENGTH = 320
DISPLAY_NAME_MAX_LENGTH = 120
USERNAME_RULE = (
    "Use 3-64 letters, digits, dots, dashes or underscores; start with a letter or digit."
)
ROLE_RULE = "Choose viewer, editor or admin."

# One function per field rule, used by every path that writes the field (create, update,
# the admin forms, the API, the import, the CLI): each returns the cleaned value and the
# rule it breaks, if any.


def check_email(value: str) -> tuple[str, InvalidAccount | None]:
    email = value.strip().lower()
    if not EMAIL.match(email) or len(email) > EMAIL_MAX_LENGTH:
        return email, InvalidAccount("Enter a valid e-mail address.", "email")
    return email, None


def check_username(value: str) -> tuple[str, InvalidAccount | None]:
    username = value.strip()
    if not USERNAME.match(username):
        return username, InvalidAccount(USERNAME_RULE, "username")
    return username, None


def check_role(value: str) -> tuple[Role, InvalidAccount | None]:
    """A role an account may have (guest is not one); viewer with the problem otherwise."""
    try:
        role = Role.parse(value)
    except ValueError:
        return Role.viewer, InvalidAccount(ROLE_RULE, "role")
    if role not in ASSIGNABLE_ROLES:
        return Role.viewer, InvalidAccount(ROLE_RULE, "role")
    return role, None


def clean_display_name(value: str) -> str:
    return value.strip()[:DISPLAY_NAME_MAX_LENGTH]


def check_new_user(data: NewUser, *, password: bool = True) -> tuple[NewUser, list[InvalidAccount]]:
    """The new account's fields cleaned, and every rule they break (none: the list is
    empty). `password=False` skips the password rules: an imported account gets none."""
    email, email_problem = check_email(data.email)
    username, username_problem = check_username(data.username)
    role, role_problem = check_role(data.role)
    problems = [p for p in (email_problem, username_problem, role_problem) if p is not None]
    if password:
        try:
            check_password_rules(data.password, username=username, email=email)
        except PasswordRuleError as exc:
            problems.append(InvalidAccount(str(exc), "password"))
    display_name = clean_display_name(data.display_name)
    return NewUser(email, username, data.password, role.name, display_name), problems


def validate_new_user(data: NewUser) -> NewUser:
    """The new account's fields cleaned, or the first rule they break as AccountError."""
    cleaned, problems = check_new_user(data)
    return only_if_valid(cleaned, problems)


def may_create(actor_role: Role, role: Role) -> bool:
    """Whether someone with `actor_role` may create an account with `role`."""
    return _can_manage(actor_role, role) and role <= actor_role


async def users_exist(session: AsyncSession) -> bool:
    return await session.scalar(select(User.id).limit(1)) is not None


async def taken_logins(
    session: AsyncSession,
    emails: Collection[str],
    usernames: Collection[str],
    exclude: UUID | None = None,
) -> tuple[set[str], set[str]]:
    """Which of these e-mail addresses and usernames accounts use already (lowercased)."""
    wanted_emails = {e.lower() for e in emails}
    wanted_names = {u.lower() for u in usernames}
    taken_emails: set[str] = set()
    taken_names: set[str] = set()
    emails_left, names_left = sorted(wanted_emails), sorted(wanted_names)
    while emails_left or names_left:  # in chunks: SQLite limits bound parameters
        some_emails, emails_left = emails_left[:500], emails_left[500:]
        some_names, names_left = names_left[:500], names_left[500:]
        query = select(User.email, User.username).where(
            or_(func.lower(User.email).in_(some_emails), func.lower(User.username).in_(some_names))
        )
        if exclude is not None:
            query = query.where(User.id != exclude)
        for email, username in (await session.execute(query)).all():
            taken_emails |= {email.lower()} & wanted_emails
            taken_names |= {username.lower()} & wanted_names
    return taken_emails, taken_names


EMAIL_TAKEN = "An account with this e-mail address exists."


async def _ensure_unique(
    session: AsyncSession, email: str, username: str, exclude: UUID | None = None
) -> None:
    emails, usernames = await taken_logins(session, [email], [username], exclude)
    if emails:
        raise AccountConflict(EMAIL_TAKEN, "email")
    if usernames:
        raise AccountConflict("This username is taken.", "username")


async def insert_user(
    session: AsyncSession,
    hashing: PasswordHashing | None,
    data: NewUser,
    *,
    is_active: bool = True,
) -> User:
    """Add the account (checked already; `user.created` once it commits). With no `hashing`
    its password is unusable. An address a concurrent transaction took since (the unique
    index) rolls the transaction back: AccountConflict."""
    user = User(
        email=data.email,
        username=data.username,
        display_name=data.display_name,
        password_hash=await hashing.hash(data.password) if hashing else UNUSABLE_PASSWORD,
        role=data.role,
        is_active=is_active,
        failed_login_count=0,
        auth_version=1,
        password_changed_at=datetime.now(UTC) if hashing else None,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent sign-up took the address since it was checked
        await session.rollback()  # the failed flush ended the transaction: start clean
        raise AccountConflict(
            "An account with this e-mail address or username exists.", "email"
        ) from None
    emit_user_event(session, USER_CREATED, user)
    return user


def _can_manage(actor_role: Role, target_role: Role) -> bool:
    """Admins manage everyone; editors manage users below admin."""
    return actor_role == Role.admin or (actor_role == Role.editor and target_role < Role.admin)


def can_manage(actor_role: Role, target_role: Role) -> bool:
    """Whether to offer changes to an account at all; the services still check each one."""
    return _can_manage(actor_role, target_role)


async def create_user(
    session: AsyncSession, hashing: PasswordHashing, actor: Actor, actor_role: Role, data: NewUser
) -> User:
    data = validate_new_user(data)
    if not may_create(actor_role, Role[data.role]):
        raise AccountForbidden("You cannot create an account with this role.", "role")
    await _ensure_unique(session, data.email, data.username)
    user = await insert_user(session, hashing, data)
    record(session, actor, "user.created", "user", user.id, email=user.email, role=user.role)
    return user


async def register_user(
    session: AsyncSession, hashing: PasswordHashing, actor: Actor, data: NewUser
) -> User:
    """Self-registration, with the role the `default_role` setting names."""
    role = await DEFAULT_ROLE.read(session)
    data = validate_new_user(
        NewUser(data.email, data.username, data.password, role, data.display_name)
    )
    await _ensure_unique(session, data.email, data.username)
    user = await insert_user(session, hashing, data)
    record(
        session,
        Actor(user.id, user.username, actor.ip_address, actor.user_agent),
        "user.registered",
        "user",
        user.id,
        email=user.email,
    )
    return user


async def find_by_login(session: AsyncSession, login: str) -> User | None:
    login = login.strip().lower()
    column = func.lower(User.email) if "@" in login else func.lower(User.username)
    return await session.scalar(select(User).where(column == login))


async def get_user(session: AsyncSession, user_id: UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise AccountNotFound("No such user.")
    return user


async def _active_admins(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == Role.admin.name, User.is_active)
        )
        or 0
    )


async def _guard_last_admin(session: AsyncSession, user: User, role: str | None = None) -> None:
    """Refuse to take the last active admin away; `role`: the user's role by then."""
    role = role or user.role
    if role == Role.admin.name and user.is_active and await _active_admins(session) <= 1:
        raise AccountConflict("This is the last active admin; make another admin first.")


async def update_user(
    session: AsyncSession,
    actor: Actor,
    actor_role: Role,
    user: User,
    *,
    email: str | None = None,
    username: str | None = None,
    display_name: str | None = None,
    role: str | None = None,
    is_active: bool | None = None,
) -> User:
    """Edit a user under the role rules; every change is audited with what changed. Every
    rule is checked before `user` changes, so a refused edit changes nothing."""
    is_self = actor.user_id == user.id
    if not is_self and not _can_manage(actor_role, user.role_level):
        raise AccountForbidden("You cannot change this account.")
    changes: dict[str, list[object]] = {}
    if email is not None or username is not None:
        new_email, email_problem = check_email(email if email is not None else user.email)
        new_username, username_problem = check_username(
            username if username is not None else user.username
        )
        for problem in (email_problem, username_problem):
            if problem is not None:
                raise problem
        await _ensure_unique(session, new_email, new_username, exclude=user.id)
        if new_email != user.email:
            changes["email"] = [user.email, new_email]
        if new_username != user.username:
            changes["username"] = [user.username, new_username]
    if display_name is not None and clean_display_name(display_name) != user.display_name:
        changes["display_name"] = [user.display_name, clean_display_name(display_name)]
    if role is not None and role != user.role:
        new_role, problem = check_role(role)
        if problem is not None:
            raise problem
        if is_self and new_role < user.role_level and actor_role != Role.admin:
            raise AccountForbidden("You cannot change your own role.", "role")
        if not _can_manage(actor_role, new_role) or new_role > actor_role:
            raise AccountForbidden("You cannot give this role.", "role")
        if new_role < Role.admin:
            await _guard_last_admin(session, user)
        changes["role"] = [user.role, new_role.name]
    deactivating = is_active is False and user.is_active
    if deactivating:
        if is_self:
            raise AccountConflict("You cannot deactivate yourself.")
        role_by_then = str(changes["role"][1]) if "role" in changes else user.role
        await _guard_last_admin(session, user, role_by_then)
    if is_active is not None and is_active != user.is_active:
        changes["is_active"] = [user.is_active, is_active]
    if not changes:
        return user
    if "email" in changes:
        user.email = str(changes["email"][1])
        user.email_verified_at = None
    if "username" in changes:
        user.username = str(changes["username"][1])
    if "display_name" in changes:
        user.display_name = str(changes["display_name"][1])
    if "role" in changes:
        user.role = str(changes["role"][1])
    if "is_active" in changes:
        user.is_active = bool(is_active)
        if deactivating:
            user.auth_version += 1  # ends every session and token at once
    if "role" in changes:
        emit_user_event(session, USER_ROLE_CHANGED, user, previous_role=str(changes["role"][0]))
    record(session, actor, "user.updated", "user", user.id, changes=changes)
    return user


async def delete_user(session: AsyncSession, actor: Actor, actor_role: Role, user: User) -> None:
    if actor.user_id == user.id:
        raise AccountConflict("You cannot delete yourself.")
    if not _can_manage(actor_role, user.role_level):
        raise AccountForbidden("You cannot delete this account.")
    await _guard_last_admin(session, user)
    record(
        session, actor, "user.deleted", "user", user.id, email=user.email, username=user.username
    )
    emit_user_event(session, USER_DELETED, user)
    await session.delete(user)


USER_STATUSES = ("active", "inactive")
_ROLE_ORDER = case({role.name: role.value for role in Role}, value=User.role, else_=0)
USER_SORTS = {
    "username": func.lower(User.username),
    "email": User.email,
    "role": _ROLE_ORDER,
    "created_at": User.created_at,
    "last_login_at": User.last_login_at,
}
"""Sort keys a list may ask for (prefix `-` for descending); roles sort by power."""


async def list_users(
    session: AsyncSession,
    q: str = "",
    role: str | None = None,
    status: str | None = None,
    sort: str = "username",
    page: PageRequest | None = None,
) -> Page[User]:
    """One page of users matching a search (e-mail, username, display name), role and status."""
    page = page or PageRequest()
    query = select(User)
    if q := (q or "").strip()[:200]:
        needle = q.lower()
        query = query.where(
            or_(
                func.lower(User.email).contains(needle, autoescape=True),
                func.lower(User.username).contains(needle, autoescape=True),
                func.lower(User.display_name).contains(needle, autoescape=True),
            )
        )
    if role:
        if role not in {r.name for r in ASSIGNABLE_ROLES}:
            raise InvalidAccount("Choose viewer, editor or admin.", "role")
        query = query.where(User.role == role)
    if status:
        if status not in USER_STATUSES:
            raise InvalidAccount("Choose active or inactive.", "status")
        query = query.where(User.is_active.is_(status == "active"))
    key = (sort or "username").removeprefix("-")
    if key not in USER_SORTS:
        raise InvalidAccount(f"Sort by one of: {', '.join(USER_SORTS)}.", "sort")
    column = USER_SORTS[key]
    order = column.desc() if (sort or "").startswith("-") else column.asc()
    return await paginate(
        session, query.order_by(order.nulls_last(), func.lower(User.username)), page
    )
