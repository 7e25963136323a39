"""Every rule about accounts, for the pages, the API and the `keel users` command alike."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy import case, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.audit import Actor, record
from app.accounts.models import ASSIGNABLE_ROLES, Role, User
from app.accounts.passwords import PasswordHashing, PasswordRuleError, check_password_rules
from app.accounts.throttle import LoginThrottle, Throttled
from app.core.errors import DomainError
from app.core.pagination import Page, PageRequest
from app.core.store import Store
from app.system.models import SystemSetting

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
SETUP_MARKER = "_setup_completed"


class AccountError(DomainError):
    """A rule about accounts said no."""


class LoginFailed(AccountError):
    """The one message for an unknown user, a wrong password and an inactive account."""

    def __init__(self) -> None:
        super().__init__("The e-mail/username or password is not right.", None, 401)


@dataclass
class NewUser:
    email: str
    username: str
    password: str
    role: str = Role.viewer.name
    display_name: str = ""


def _clean(data: NewUser) -> NewUser:
    email = data.email.strip().lower()
    username = data.username.strip()
    if not EMAIL.match(email) or len(email) > 320:
        raise AccountError("Enter a valid e-mail address.", "email")
    if not USERNAME.match(username):
        raise AccountError(
            "Use 3-64 letters, digits, dots, dashes or underscores; start with a letter or digit.",
            "username",
        )
    try:
        role = Role.parse(data.role)
    except ValueError:
        raise AccountError("Choose viewer, editor or admin.", "role") from None
    if role not in ASSIGNABLE_ROLES:
        raise AccountError("Choose viewer, editor or admin.", "role")
    try:
        check_password_rules(data.password, username=username, email=email)
    except PasswordRuleError as exc:
        raise AccountError(str(exc), "password") from None
    return NewUser(email, username, data.password, role.name, data.display_name.strip()[:120])


async def users_exist(session: AsyncSession) -> bool:
    return await session.scalar(select(User.id).limit(1)) is not None


async def _ensure_unique(
    session: AsyncSession, email: str, username: str, exclude: UUID | None = None
) -> None:
    query = select(User.email, User.username).where(
        or_(func.lower(User.email) == email.lower(), func.lower(User.username) == username.lower())
    )
    if exclude is not None:
        query = query.where(User.id != exclude)
    for existing_email, existing_username in (await session.execute(query)).all():
        if existing_email.lower() == email.lower():
            raise AccountError("An account with this e-mail address exists.", "email", 409)
        if existing_username.lower() == username.lower():
            raise AccountError("This username is taken.", "username", 409)


async def _insert_user(session: AsyncSession, hashing: PasswordHashing, data: NewUser) -> User:
    now = datetime.now(UTC)
    user = User(
        email=data.email,
        username=data.username,
        display_name=data.display_name,
        password_hash=await hashing.hash(data.password),
        role=data.role,
        is_active=True,
        failed_login_count=0,
        auth_version=1,
        password_changed_at=now,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise AccountError(
            "An account with this e-mail address or username exists.", "email", 409
        ) from None
    return user


async def create_first_admin(
    session: AsyncSession, hashing: PasswordHashing, actor: Actor, data: NewUser
) -> User:
    """The first run's admin. Race-safe: the setup marker row can be inserted only once."""
    data = _clean(
        NewUser(data.email, data.username, data.password, Role.admin.name, data.display_name)
    )
    if await users_exist(session):
        raise AccountError("Keel is already set up.", None, 409)
    session.add(SystemSetting(key=SETUP_MARKER, value=True, updated_at=datetime.now(UTC)))
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()  # a concurrent set-up won the race
        raise AccountError("Keel is already set up.", None, 409) from None
    user = await _insert_user(session, hashing, data)
    record(
        session,
        Actor(user.id, user.username, actor.ip_address, actor.user_agent),
        "setup.completed",
        "user",
        user.id,
        email=user.email,
    )
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
    data = _clean(data)
    if not _can_manage(actor_role, Role[data.role]) or Role[data.role] > actor_role:
        raise AccountError("You cannot create an account with this role.", "role", 403)
    await _ensure_unique(session, data.email, data.username)
    user = await _insert_user(session, hashing, data)
    record(session, actor, "user.created", "user", user.id, email=user.email, role=user.role)
    return user


async def register_user(
    session: AsyncSession, hashing: PasswordHashing, actor: Actor, data: NewUser
) -> User:
    """Self-registration: always a viewer."""
    data = _clean(
        NewUser(data.email, data.username, data.password, Role.viewer.name, data.display_name)
    )
    await _ensure_unique(session, data.email, data.username)
    user = await _insert_user(session, hashing, data)
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


async def authenticate(
    session: AsyncSession,
    hashing: PasswordHashing,
    throttle: LoginThrottle,
    actor: Actor,
    login: str,
    password: str,
    *,
    lockout_minutes: int,
    max_failures: int,
) -> User:
    """The user for `login` and `password`, or LoginFailed / Throttled. Audits both outcomes."""
    login = login.strip()[:320]
    try:
        await throttle.check(login, actor.ip_address)
    except Throttled:
        record(session, actor, "auth.login_throttled", "user", None, login=login)
        raise
    user = await find_by_login(session, login)
    now = datetime.now(UTC)
    locked = user is not None and user.locked_until is not None and user.locked_until > now
    valid = await hashing.verify(user.password_hash if user else None, password[:1024])
    if user is None or not valid or not user.is_active or locked:
        await throttle.record_failure(login, actor.ip_address)
        if user is not None and not valid:
            user.failed_login_count += 1
            if user.failed_login_count >= max_failures:
                user.locked_until = now + timedelta(minutes=lockout_minutes)
        record(session, actor, "auth.login_failed", "user", user.id if user else None, login=login)
        if locked:
            raise Throttled(
                int((user.locked_until - now).total_seconds()) + 1,  # type: ignore[union-attr]
                "Too many failed sign-ins for this account. Try again later.",
            )
        raise LoginFailed
    if hashing.needs_rehash(user.password_hash):
        user.password_hash = await hashing.hash(password)
    user.failed_login_count = 0
    user.locked_until = None
    user.last_login_at = now
    await throttle.reset(login)
    record(
        session,
        Actor(user.id, user.username, actor.ip_address, actor.user_agent),
        "auth.login",
        "user",
        user.id,
    )
    return user


async def get_user(session: AsyncSession, user_id: UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise AccountError("No such user.", None, 404)
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


async def _guard_last_admin(session: AsyncSession, user: User) -> None:
    if user.role == Role.admin.name and user.is_active and await _active_admins(session) <= 1:
        raise AccountError("This is the last active admin; make another admin first.", None, 409)


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
    """Edit a user under the role rules; every change is audited with what changed."""
    is_self = actor.user_id == user.id
    if not is_self and not _can_manage(actor_role, user.role_level):
        raise AccountError("You cannot change this account.", None, 403)
    changes: dict[str, object] = {}
    if email is not None or username is not None:
        new_email = (email if email is not None else user.email).strip().lower()
        new_username = (username if username is not None else user.username).strip()
        if not EMAIL.match(new_email):
            raise AccountError("Enter a valid e-mail address.", "email")
        if not USERNAME.match(new_username):
            raise AccountError("Use 3-64 letters, digits, dots, dashes or underscores.", "username")
        await _ensure_unique(session, new_email, new_username, exclude=user.id)
        if new_email != user.email:
            changes["email"] = [user.email, new_email]
            user.email = new_email
        if new_username != user.username:
            changes["username"] = [user.username, new_username]
            user.username = new_username
    if display_name is not None and display_name.strip() != user.display_name:
        changes["display_name"] = [user.display_name, display_name.strip()[:120]]
        user.display_name = display_name.strip()[:120]
    if role is not None and role != user.role:
        try:
            new_role = Role.parse(role)
        except ValueError:
            raise AccountError("Choose viewer, editor or admin.", "role") from None
        if new_role not in ASSIGNABLE_ROLES:
            raise AccountError("Choose viewer, editor or admin.", "role")
        if is_self and new_role < user.role_level and actor_role != Role.admin:
            raise AccountError("You cannot change your own role.", "role", 403)
        if not _can_manage(actor_role, new_role) or new_role > actor_role:
            raise AccountError("You cannot give this role.", "role", 403)
        if new_role < Role.admin:
            await _guard_last_admin(session, user)
        changes["role"] = [user.role, new_role.name]
        user.role = new_role.name
    if is_active is not None and is_active != user.is_active:
        if not is_active:
            if is_self:
                raise AccountError("You cannot deactivate yourself.", None, 409)
            await _guard_last_admin(session, user)
            user.auth_version += 1  # ends every session and token at once
        changes["is_active"] = [user.is_active, is_active]
        user.is_active = is_active
    if changes:
        record(session, actor, "user.updated", "user", user.id, changes=changes)
    return user


async def change_password(
    session: AsyncSession,
    hashing: PasswordHashing,
    actor: Actor,
    user: User,
    current: str,
    new: str,
) -> User:
    """The user's own change: needs the current password; ends their other sessions."""
    if not await hashing.verify(user.password_hash, current[:1024]):
        raise AccountError("The current password is not right.", "current_password")
    return await set_password(session, hashing, actor, user, new)


async def set_password(
    session: AsyncSession, hashing: PasswordHashing, actor: Actor, user: User, new: str
) -> User:
    try:
        check_password_rules(new, username=user.username, email=user.email)
    except PasswordRuleError as exc:
        raise AccountError(str(exc), "new_password") from None
    user.password_hash = await hashing.hash(new)
    user.password_changed_at = datetime.now(UTC)
    user.auth_version += 1
    user.failed_login_count = 0
    user.locked_until = None
    record(session, actor, "user.password_changed", "user", user.id)
    return user


async def delete_user(session: AsyncSession, actor: Actor, actor_role: Role, user: User) -> None:
    if actor.user_id == user.id:
        raise AccountError("You cannot delete yourself.", None, 409)
    if not _can_manage(actor_role, user.role_level):
        raise AccountError("You cannot delete this account.", None, 403)
    await _guard_last_admin(session, user)
    record(
        session, actor, "user.deleted", "user", user.id, email=user.email, username=user.username
    )
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
            raise AccountError("Choose viewer, editor or admin.", "role")
        query = query.where(User.role == role)
    if status:
        if status not in USER_STATUSES:
            raise AccountError("Choose active or inactive.", "status")
        query = query.where(User.is_active.is_(status == "active"))
    key = (sort or "username").removeprefix("-")
    if key not in USER_SORTS:
        raise AccountError(f"Sort by one of: {', '.join(USER_SORTS)}.", "sort")
    column = USER_SORTS[key]
    order = column.desc() if (sort or "").startswith("-") else column.asc()
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = await session.scalars(
        query.order_by(order.nulls_last(), func.lower(User.username))
        .offset(page.offset)
        .limit(page.per_page)
    )
    return Page(list(items), int(total), page.page, page.per_page)


RESET_LINK_KEY = "password-reset:"
RESET_LINK_SECONDS = 3600


class PasswordResetInvalid(AccountError):
    """A reset link that is unknown, expired, used, or no longer matches its account."""

    def __init__(self) -> None:
        super().__init__("This link has expired or was already used.", None, 404)


def _reset_key(token: str) -> str:
    return RESET_LINK_KEY + hashlib.sha256(token.encode()).hexdigest()


async def create_password_reset(
    session: AsyncSession, store: Store, actor: Actor, actor_role: Role, user: User
) -> str:
    """A one-time link token for `user` (valid one hour); only its hash is stored."""
    if actor.user_id != user.id and not _can_manage(actor_role, user.role_level):
        raise AccountError("You cannot reset this account's password.", None, 403)
    if not user.is_active:
        raise AccountError("This account is deactivated; reactivate it first.", None, 409)
    token = secrets.token_urlsafe(32)
    ticket = {"user_id": str(user.id), "auth_version": user.auth_version}
    await store.set(_reset_key(token), json.dumps(ticket), ttl=RESET_LINK_SECONDS)
    record(
        session,
        actor,
        "user.password_reset_link_created",
        "user",
        user.id,
        expires_in=RESET_LINK_SECONDS,
    )
    return token


async def find_password_reset(session: AsyncSession, store: Store, token: str) -> User:
    """The account a reset link is for, without using the link up; else PasswordResetInvalid.

    A link also dies when its account's `auth_version` moved on (a new password, a
    deactivation) after it was made.
    """
    raw = await store.get(_reset_key(token)) if 0 < len(token) <= 128 else None
    if raw is None:
        raise PasswordResetInvalid()
    ticket = json.loads(raw)
    user = await session.get(User, UUID(ticket["user_id"]))
    if user is None or not user.is_active or user.auth_version != ticket["auth_version"]:
        raise PasswordResetInvalid()
    return user


async def consume_password_reset(
    session: AsyncSession,
    store: Store,
    hashing: PasswordHashing,
    actor: Actor,
    token: str,
    new_password: str,
) -> User:
    """Set the password a reset link allows, once: the link is deleted and old sessions end.

    A password that breaks the rules leaves the link usable; of two racing uses, only the
    one that deletes the key wins (the other raises, rolling its transaction back).
    """
    user = await find_password_reset(session, store, token)
    actor = Actor(user.id, user.username, actor.ip_address, actor.user_agent)
    await set_password(session, hashing, actor, user, new_password)
    if await store.delete(_reset_key(token)) == 0:
        raise PasswordResetInvalid()
    record(session, actor, "user.password_reset", "user", user.id, via="link")
    return user
