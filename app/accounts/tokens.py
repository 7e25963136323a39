"""API credentials: access JWTs, rotating refresh tokens, and API keys.

Access tokens are HS256 JWTs signed with a key derived from SECRET_KEY. Verification pins
the algorithm, issuer and audience, requires exp/iat/sub/jti, and never looks at header
fields such as `kid`, `jku` or `jwk`. Refresh tokens are opaque, stored (hashed) in the
store, and belong to a family: presenting a token that was already rotated revokes the
family, because only a thief would hold the old one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from app.core.store import Store

ALGORITHM = "HS256"
ISSUER = "keel"
AUDIENCE = "keel-api"
API_KEY_PREFIX = "keel_"
REFRESH_PREFIX = "refresh:"
FAMILY_REVOKED_PREFIX = "refresh-family-revoked:"
ACCESS_REVOKED_PREFIX = "access-revoked:"


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


VERIFIED_KEPT = 4096
"""Access tokens whose signature this process has checked, kept so that a client sending
the same token again costs a dict lookup instead of an HMAC and a JSON parse."""


class AccessTokens:
    def __init__(self, secret_key: str, lifetime_seconds: int) -> None:
        self.key = _derive(secret_key, "keel-access-token")
        self.lifetime = lifetime_seconds
        self._verified: dict[str, AccessClaims] = {}

    def issue(self, user_id: uuid.UUID, role: str, auth_version: int) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "role": role,
            "ver": auth_version,
            "jti": uuid.uuid4().hex,
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
                options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
                leeway=0,
            )
            if claims["iat"] > time.time() + 5:
                raise InvalidToken("The token is not valid yet.")
            return AccessClaims(
                user_id=uuid.UUID(claims["sub"]),
                role=str(claims.get("role", "")),
                jti=str(claims["jti"]),
                auth_version=int(claims.get("ver", 0)),
                expires_at=int(claims["exp"]),
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The access token has expired.") from None
        except (jwt.InvalidTokenError, ValueError, KeyError, TypeError):
            raise InvalidToken("The access token is not valid.") from None


@dataclass
class RefreshRecord:
    user_id: str
    family: str
    auth_version: int
    rotated: bool = False


class RefreshTokens:
    def __init__(self, store: Store, lifetime_seconds: int) -> None:
        self.store = store
        self.lifetime = lifetime_seconds

    async def issue(self, user_id: uuid.UUID, auth_version: int, family: str | None = None) -> str:
        token = secrets.token_urlsafe(32)
        record = RefreshRecord(str(user_id), family or uuid.uuid4().hex, auth_version)
        await self.store.set(
            REFRESH_PREFIX + hash_secret(token), json.dumps(record.__dict__), ttl=self.lifetime
        )
        return token

    async def _record(self, token: str) -> RefreshRecord:
        raw = await self.store.get(REFRESH_PREFIX + hash_secret(token))
        if raw is None:
            raise InvalidToken("The refresh token is not valid.")
        record = RefreshRecord(**json.loads(raw))
        if await self.store.get(FAMILY_REVOKED_PREFIX + record.family) is not None:
            raise InvalidToken("The refresh token has been revoked.")
        return record

    async def rotate(self, token: str) -> tuple[RefreshRecord, str]:
        """Spend `token` for a new one of the same family; reuse revokes the family."""
        record = await self._record(token)
        if record.rotated:
            await self.revoke_family(record.family)
            raise InvalidToken("The refresh token was already used; all its tokens are revoked.")
        record.rotated = True
        await self.store.set(
            REFRESH_PREFIX + hash_secret(token), json.dumps(record.__dict__), ttl=self.lifetime
        )
        new_token = await self.issue(uuid.UUID(record.user_id), record.auth_version, record.family)
        return record, new_token

    async def revoke(self, token: str) -> RefreshRecord | None:
        try:
            record = await self._record(token)
        except InvalidToken:
            return None
        await self.revoke_family(record.family)
        return record

    async def revoke_family(self, family: str) -> None:
        await self.store.set(FAMILY_REVOKED_PREFIX + family, "1", ttl=self.lifetime)


def revoked_key(jti: str) -> str:
    """The store key that marks an access token revoked until it would have expired."""
    return ACCESS_REVOKED_PREFIX + jti


async def revoke_access_token(store: Store, claims: AccessClaims) -> None:
    ttl = max(claims.expires_at - time.time(), 1)
    await store.set(revoked_key(claims.jti), "1", ttl=ttl)


async def access_token_revoked(store: Store, jti: str) -> bool:
    return await store.get(revoked_key(jti)) is not None


def new_api_key() -> tuple[str, str, str]:
    """A new API key: (secret shown once, prefix for lists, hash to store)."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[: len(API_KEY_PREFIX) + 6], hash_secret(secret)


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(API_KEY_PREFIX)


def token_response(access: str, refresh: str, lifetime: int) -> dict[str, Any]:
    return {
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": lifetime,
    }
