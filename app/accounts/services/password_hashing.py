"""Password hashing (argon2id) off the event loop, and the password rules.

Hashing takes tens of milliseconds of CPU on purpose, so it runs in worker threads, at
most PASSWORD_HASH_CONCURRENCY at once per process: logins queue among themselves and
never stall other requests.
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 1024
COMMON_PASSWORDS = Path(__file__).with_name("common-passwords.txt.gz")
UNUSABLE_PASSWORD = "!"  # noqa: S105 (a marker no hash equals, not a password)
"""The hash of an account whose password was never set (imported accounts): no password
matches it, and checking one costs what checking an unknown user costs."""

# OWASP (2024): argon2id with at least m=19 MiB, t=2, p=1.
hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


class PasswordRuleError(ValueError):
    """A new password breaks a rule; the message is for the user."""


@cache
def _common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS, "rt", encoding="utf-8") as handle:
        return frozenset(line.strip().lower() for line in handle if line.strip())


def check_password_rules(password: str, *, username: str = "", email: str = "") -> None:
    """Raise PasswordRuleError when `password` may not be used."""
    if len(password) < MIN_LENGTH:
        raise PasswordRuleError(f"Use at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise PasswordRuleError(f"Use at most {MAX_LENGTH} characters.")
    lowered = password.lower()
    if lowered in _common_passwords():
        raise PasswordRuleError("This password is on a list of common passwords; choose another.")
    personal = {username.lower(), email.lower(), email.split("@")[0].lower()} - {""}
    if lowered in personal:
        raise PasswordRuleError("The password must not be your username or e-mail address.")


class PasswordHashing:
    """argon2id hashing in threads with bounded concurrency."""

    def __init__(self, concurrency: int) -> None:
        self.limiter = anyio.CapacityLimiter(concurrency)
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(hasher.hash, password, limiter=self.limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Check `password`; with no hash (unknown user) a dummy check runs for equal timing."""
        if password_hash is None or password_hash == UNUSABLE_PASSWORD:
            if self._dummy is None:
                self._dummy = await self.hash("keel-dummy-password-for-timing")
            password_hash = self._dummy
            await anyio.to_thread.run_sync(_verify, password_hash, password, limiter=self.limiter)
            return False
        return await anyio.to_thread.run_sync(
            _verify, password_hash, password, limiter=self.limiter
        )

    @staticmethod
    def needs_rehash(password_hash: str) -> bool:
        return hasher.check_needs_rehash(password_hash)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
