"""Server-side browser sessions in the store, with ids Keel alone chooses.

The cookie carries 256 random bits; the store keeps the session under a hash of it, so a
copy of the store does not hand out live cookies. A session is bound to the user's
`auth_version`, ends after an idle period and after an absolute lifetime, and its id is
replaced (the old key deleted) at sign-in and on a role change. An id the store does not
know is never adopted: the client gets a new one only by signing in.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from uuid import UUID

from app.core.store import Store
from app.settings import AuthSettings

SESSION_PREFIX = "session:"
USER_INDEX_PREFIX = "user-sessions:"
TOUCH_AFTER_SECONDS = 60


def cookie_name(production: bool) -> str:
    """`__Host-` binds the cookie to this exact host, over HTTPS, path /."""
    return "__Host-keel_session" if production else "keel_session"


def digest_of(session_id: str) -> str:
    """The store key part for a session id (the id itself is never stored)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class BrowserSession:
    user_id: str
    auth_version: int
    role: str
    created_at: float
    last_seen: float
    ip_address: str | None
    user_agent: str | None
    digest: str = ""
    csrf_secret: str = ""
    """What the session's CSRF token is derived from (app/core/csrf.py); kept when the id
    is replaced, so forms rendered before a rotation still post. A session stored before
    sessions had one takes the digest of the id it had then (`SessionStore.load`)."""

    @property
    def short_id(self) -> str:
        """A public handle for lists and "revoke" buttons (not usable as a cookie)."""
        return self.digest[:16]


class SessionStore:
    def __init__(self, store: Store, settings: AuthSettings) -> None:
        self.store = store
        self.idle_seconds = settings.session_idle_minutes * 60
        self.max_seconds = settings.session_max_hours * 3600

    async def create(
        self,
        user_id: UUID,
        auth_version: int,
        role: str,
        ip_address: str | None,
        user_agent: str | None,
    ) -> str:
        """Start a session; returns the id for the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        session = BrowserSession(
            str(user_id), auth_version, role, now, now, ip_address, (user_agent or "")[:300] or None
        )
        session.digest = digest_of(session_id)
        session.csrf_secret = secrets.token_urlsafe(32)
        await self._save(session)
        return session_id

    async def load(self, session_id: str) -> BrowserSession | None:
        """The live session for a cookie value, refreshed for its idle timeout; else None."""
        if not session_id or len(session_id) > 128:
            return None
        digest = digest_of(session_id)
        raw = await self.store.get(SESSION_PREFIX + digest)
        if raw is None:
            return None
        session = BrowserSession(**json.loads(raw))
        if not session.csrf_secret:  # stored before sessions had one: the same every time
            session.csrf_secret = session.digest
        now = time.time()
        if (
            now - session.created_at > self.max_seconds
            or now - session.last_seen > self.idle_seconds
        ):
            await self._delete(session)
            return None
        if now - session.last_seen > TOUCH_AFTER_SECONDS:
            session.last_seen = now
            await self._save(session)
        return session

    async def rotate(self, session_id: str, role: str | None = None) -> str | None:
        """Replace the id of a session (keeping its start time); the old id stops working."""
        session = await self.load(session_id)
        if session is None:
            return None
        await self._delete(session)
        new_id = secrets.token_urlsafe(32)
        session.digest = digest_of(new_id)
        if role is not None:
            session.role = role
        await self._save(session)
        return new_id

    async def revoke(self, session_id: str) -> None:
        raw = await self.store.get(SESSION_PREFIX + digest_of(session_id))
        if raw is not None:
            await self._delete(BrowserSession(**json.loads(raw)))

    async def list_for_user(self, user_id: UUID) -> list[BrowserSession]:
        """The user's live sessions, most recently used first."""
        sessions = []
        for key in await self.store.keys(f"{USER_INDEX_PREFIX}{user_id}:*"):
            digest = key.rsplit(":", 1)[1]
            raw = await self.store.get(SESSION_PREFIX + digest)
            if raw is None:
                await self.store.delete(key)
                continue
            sessions.append(BrowserSession(**json.loads(raw)))
        return sorted(sessions, key=lambda s: s.last_seen, reverse=True)

    async def revoke_by_short_id(self, user_id: UUID, short_id: str) -> bool:
        for session in await self.list_for_user(user_id):
            if session.short_id == short_id:
                await self._delete(session)
                return True
        return False

    async def revoke_all(self, user_id: UUID, except_digest: str | None = None) -> int:
        count = 0
        for session in await self.list_for_user(user_id):
            if session.digest != except_digest:
                await self._delete(session)
                count += 1
        return count

    async def _save(self, session: BrowserSession) -> None:
        remaining = min(self.idle_seconds, self.max_seconds - (time.time() - session.created_at))
        ttl = max(remaining, 1)
        payload = json.dumps(asdict(session))
        await self.store.set(SESSION_PREFIX + session.digest, payload, ttl=ttl)
        await self.store.set(f"{USER_INDEX_PREFIX}{session.user_id}:{session.digest}", "1", ttl=ttl)

    async def _delete(self, session: BrowserSession) -> None:
        await self.store.delete(
            SESSION_PREFIX + session.digest,
            f"{USER_INDEX_PREFIX}{session.user_id}:{session.digest}",
        )
