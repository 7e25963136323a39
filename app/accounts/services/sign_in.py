"""The first run's admin, signing in, and signing out everywhere."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Role, User
from app.accounts.services.audit import Actor, record
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.sessions import SessionStore
from app.accounts.services.throttle import LoginThrottle, Throttled
from app.accounts.services.users import (
    AccountConflict,
    AccountError,
    NewUser,
    find_by_login,
    insert_user,
    users_exist,
    validate_new_user,
)
from app.core.errors import DomainError, NotSignedIn
from app.core.runtime import Runtime
from app.core.store import StoreError
from app.site_settings.models import SystemSetting

SETUP_MARKER = "_setup_completed"


class LoginFailed(AccountError, NotSignedIn):
    """The one message for an unknown user, a wrong password and an inactive account."""

    def __init__(self) -> None:
        super().__init__("The e-mail/username or password is not right.")


async def create_first_admin(
    session: AsyncSession, hashing: PasswordHashing, actor: Actor, data: NewUser
) -> User:
    """The first run's admin. Race-safe: the setup marker row can be inserted only once."""
    data = validate_new_user(
        NewUser(data.email, data.username, data.password, Role.admin.name, data.display_name)
    )
    if await users_exist(session):
        raise AccountConflict("Keel is already set up.")
    session.add(SystemSetting(key=SETUP_MARKER, value=True, updated_at=datetime.now(UTC)))
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()  # a concurrent set-up won the race
        raise AccountConflict("Keel is already set up.") from None
    user = await insert_user(session, hashing, data)
    record(
        session,
        Actor(user.id, user.username, actor.ip_address, actor.user_agent),
        "setup.completed",
        "user",
        user.id,
        email=user.email,
    )
    return user


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
        if locked and user is not None and user.locked_until is not None:  # locked says so
            raise Throttled(
                int((user.locked_until - now).total_seconds()) + 1,
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


async def sign_in_with_password(
    session: AsyncSession, runtime: Runtime, actor: Actor, login: str, password: str
) -> User:
    """`authenticate` with the app's hashing, throttle and limits; a failure is committed
    (its audit entry and counters survive) before the error is raised."""
    settings = runtime.settings.auth
    try:
        return await authenticate(
            session,
            runtime.service(PasswordHashing),
            runtime.service(LoginThrottle),
            actor,
            login,
            password,
            lockout_minutes=settings.login_lockout_minutes,
            max_failures=settings.login_max_failures,
        )
    except DomainError:
        await session.commit()
        raise


async def sign_out_everywhere(
    session: AsyncSession, sessions: SessionStore, actor: Actor, user: User
) -> int | None:
    """End every sign-in of `user`: their browser sessions, the caller's own included, and
    their API tokens. Sessions, access and refresh tokens all carry the account's
    `auth_version`, which this moves on, so each is refused once the change commits;
    deleting the sessions from the store only tidies the list (with the store away, the
    API's sign-out still holds and the keys expire on their own). Audited, with the number
    of browser sessions deleted (None when the store could not say)."""
    user.auth_version += 1
    ended: int | None
    try:
        ended = await sessions.revoke_all(user.id)
    except StoreError:
        ended = None
    record(session, actor, "auth.signed_out_everywhere", "user", user.id, sessions=ended)
    return ended
