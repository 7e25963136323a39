"""API credentials: access JWTs, rotating refresh tokens, and API keys.

Access tokens are HS256 JWTs signed with a key derived from SECRET_KEY. Verification pins
the algorithm, issuer and audience, requires exp/iat/sub/jti/fam, and never looks at
header fields such as `kid`, `jku` or `jwk`. Refresh tokens are opaque, stored (hashed) in
the database, and belong to a family (one sign-in); access tokens carry their family's id
(`fam`), and one without it is not valid, since revoking its family is what signs a token
out. Presenting a refresh token that was already spent revokes the family, because only a
thief (or the loser of a race) would hold the old one. Revocation lives in the database:
IdentityMiddleware checks it in the same read that loads the caller, so a store that
loses its data brings no signed-out token back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

import jwt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import RefreshToken, RevokedAccessToken, TokenFamily, User
from app.core.db import dialect_insert

ALGORITHM = "HS256"
ISSUER = "keel"
AUDIENCE = "keel-api"
API_KEY_PREFIX = "keel_"
JTI_MAX_LENGTH = 64


class InvalidToken(Exception):
    """A credential that must not be accepted; the message is safe to show."""


def _derive(secret_key: str, purpose: str) -> bytes:
    return hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).digest()


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    role: str
    jti: str
    auth_version: int
    expires_at: int
    family: uuid.UUID
    """The sign-in (token family) the token was issued from."""


VERIFIED_KEPT = 4096
"""Access tokens whose signature this process has checked, kept so that a client sending
the same token again costs a dict lookup instead of an HMAC and a JSON parse."""


class AccessTokens:
    def __init__(self, secret_key: str, lifetime_seconds: int) -> None:
        self.key = _derive(secret_key, "keel-access-token")
        self.lifetime = lifetime_seconds
        self._verified: dict[str, AccessClaims] = {}

    def issue(self, user_id: uuid.UUID, role: str, auth_version: int, family: uuid.UUID) -> str:
        """An access token of the sign-in `family` (RefreshTokens.start made it)."""
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "role": role,
            "ver": auth_version,
            "jti": uuid.uuid4().hex,
            "fam": family.hex,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
        }
        return jwt.encode(claims, self.key, algorithm=ALGORITHM)

    def verify(self, token: str) -> AccessClaims:
        """The token's claims if its signature, audience, issuer and times hold. Only the
        expiry can change for a token already checked; revocation is the caller's check."""
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at <= time.time():
                del self._verified[token]
                raise InvalidToken("The access token has expired.")
            return known
        claims = self._verify_signed(token)
        if len(self._verified) >= VERIFIED_KEPT:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _verify_signed(self, token: str) -> AccessClaims:
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "jti", "fam", "iss", "aud"]},
                leeway=0,
            )
            if claims["iat"] > time.time() + 5:
                raise InvalidToken("The token is not valid yet.")
            jti = str(claims["jti"])
            if not 0 < len(jti) <= JTI_MAX_LENGTH:
                raise InvalidToken("The access token is not valid.")
            return AccessClaims(
                user_id=uuid.UUID(claims["sub"]),
                role=str(claims.get("role", "")),
                jti=jti,
                auth_version=int(claims.get("ver", 0)),
                expires_at=int(claims["exp"]),
                family=uuid.UUID(claims["fam"]),
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The access token has expired.") from None
        except (jwt.InvalidTokenError, ValueError, KeyError, TypeError):
            raise InvalidToken("The access token is not valid.") from None


@dataclass(frozen=True)
class Rotation:
    """A refresh token spent: its user, its family and the next refresh token."""

    user: User
    family: uuid.UUID
    refresh_token: str


class RefreshTokens:
    """API sign-ins in the database: token families, their refresh tokens, and access
    tokens signed out before they expire. The store plays no part, so nothing here is lost
    or brought back with the store's data."""

    def __init__(self, lifetime_seconds: int, access_lifetime_seconds: int) -> None:
        self.lifetime = timedelta(seconds=lifetime_seconds)
        self.family_lifetime = timedelta(seconds=max(lifetime_seconds, access_lifetime_seconds))
        """From its last rotation, how long a family can have a token still valid."""

    async def start(
        self, session: AsyncSession, user_id: uuid.UUID, auth_version: int
    ) -> tuple[uuid.UUID, str]:
        """A new family (one sign-in) and its first refresh token, in the caller's transaction."""
        now = datetime.now(UTC)
        family = TokenFamily(
            user_id=user_id,
            auth_version=auth_version,
            created_at=now,
            expires_at=now + self.family_lifetime,
        )
        session.add(family)
        await session.flush()
        return family.id, self._issue(session, family.id, now)

    def _issue(self, session: AsyncSession, family: uuid.UUID, now: datetime) -> str:
        token = secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                token_hash=hash_secret(token),
                family_id=family,
                created_at=now,
                expires_at=now + self.lifetime,
            )
        )
        return token

    async def rotate(self, session: AsyncSession, token: str) -> Rotation:
        """Spend `token` for the next one of its family. Spending is one conditional UPDATE,
        so of two requests presenting the same token exactly one wins; the other, like any
        later presentation, is a reuse (only a thief or a raced client holds a spent token)
        and revokes the family, every access token issued from it included. Raises
        InvalidToken; a revocation is committed before that."""
        now = datetime.now(UTC)
        token_hash = hash_secret(token)
        spent = await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_hash == token_hash,
                RefreshToken.spent_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .values(spent_at=now)
            .returning(RefreshToken.family_id)
            .execution_options(synchronize_session=False)
        )
        family = spent.scalar()
        if family is None:
            await self._refuse(session, token_hash)
        live = await session.execute(
            update(TokenFamily)
            .where(
                TokenFamily.id == family,
                TokenFamily.revoked_at.is_(None),
                TokenFamily.expires_at > now,
            )
            .values(expires_at=now + self.family_lifetime)
            .returning(TokenFamily.user_id, TokenFamily.auth_version)
            .execution_options(synchronize_session=False)
        )
        signed_in = live.first()
        if signed_in is None:
            raise InvalidToken("The refresh token has been revoked.")
        user = await session.get(User, signed_in.user_id)
        if user is None or not user.is_active or user.auth_version != signed_in.auth_version:
            await self.revoke_family(session, family)
            await session.commit()
            raise InvalidToken("The refresh token is no longer valid.")
        return Rotation(user, family, self._issue(session, family, now))

    async def _refuse(self, session: AsyncSession, token_hash: str) -> NoReturn:
        """The token could not be spent: unknown or expired, or spent before (a reuse)."""
        found = await session.execute(
            select(RefreshToken.family_id, RefreshToken.spent_at).where(
                RefreshToken.token_hash == token_hash
            )
        )
        row = found.first()
        if row is None or row.spent_at is None:
            raise InvalidToken("The refresh token is not valid.")
        await self.revoke_family(session, row.family_id)
        await session.commit()
        raise InvalidToken("The refresh token was already used; all its tokens are revoked.")

    async def revoke(self, session: AsyncSession, token: str) -> None:
        """End the family of the refresh token `token` (nothing when it is unknown)."""
        family = await session.scalar(
            select(RefreshToken.family_id).where(RefreshToken.token_hash == hash_secret(token))
        )
        if family is not None:
            await self.revoke_family(session, family)

    async def revoke_family(self, session: AsyncSession, family: uuid.UUID) -> None:
        await session.execute(
            update(TokenFamily)
            .where(TokenFamily.id == family, TokenFamily.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
            .execution_options(synchronize_session=False)
        )

    async def sign_out(self, session: AsyncSession, claims: AccessClaims) -> None:
        """Sign out an access token: it is refused until it expires, and so is every token
        of its family (the sign-in it came from)."""
        expires_at = datetime.fromtimestamp(claims.expires_at, UTC)
        await session.execute(
            dialect_insert(session, RevokedAccessToken)
            .values(jti=claims.jti, expires_at=expires_at)
            .on_conflict_do_nothing(index_elements=["jti"])
        )
        await self.revoke_family(session, claims.family)


def new_api_key() -> tuple[str, str, str]:
    """A new API key: (secret shown once, prefix for lists, hash to store)."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[: len(API_KEY_PREFIX) + 6], hash_secret(secret)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(API_KEY_PREFIX)
