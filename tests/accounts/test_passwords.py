"""Password rules and hashing: app/accounts/services/password_hashing.py."""

from __future__ import annotations

import asyncio
import time

import pytest
from argon2 import PasswordHasher
from argon2.low_level import Type

from app.accounts.services.password_hashing import (
    MAX_LENGTH,
    PasswordHashing,
    PasswordRuleError,
    check_password_rules,
    hasher,
)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short pass", "at least 12"),
        ("x" * (MAX_LENGTH + 1), "at most 1024"),
        ("password1234", "common passwords"),
        ("QwertyQwerty", "common passwords"),
        ("alice.example", "username or e-mail"),
    ],
)
def test_weak_passwords_are_refused_with_a_reason(password: str, message: str) -> None:
    with pytest.raises(PasswordRuleError, match=message):
        check_password_rules(password, username="alice.example", email="alice@example.org")


def test_a_long_uncommon_password_is_accepted() -> None:
    check_password_rules("violet harbour lantern 42", username="alice", email="alice@example.org")


def test_hashes_are_argon2id_with_at_least_owasp_parameters() -> None:
    encoded = hasher.hash("violet harbour lantern 42")
    assert encoded.startswith("$argon2id$")
    m, t, p = (int(part.split("=")[1]) for part in encoded.split("$")[3].split(","))
    assert hasher.type is Type.ID
    assert m >= 19 * 1024 and t >= 2 and p >= 1


async def test_verification_accepts_the_right_password_only() -> None:
    hashing = PasswordHashing(2)
    encoded = await hashing.hash("violet harbour lantern 42")
    assert await hashing.verify(encoded, "violet harbour lantern 42")
    assert not await hashing.verify(encoded, "violet harbour lantern 43")
    assert not await hashing.verify("not-a-hash", "anything at all")


async def test_an_unknown_user_costs_a_real_hash_check() -> None:
    """No account must answer no faster than a wrong password does (no user enumeration)."""
    hashing = PasswordHashing(1)
    encoded = await hashing.hash("violet harbour lantern 42")
    await hashing.verify(None, "warm-up")  # the dummy hash is made once
    started = time.perf_counter()
    assert not await hashing.verify(None, "guess guess guess")
    unknown = time.perf_counter() - started
    started = time.perf_counter()
    assert not await hashing.verify(encoded, "guess guess guess")
    wrong = time.perf_counter() - started
    assert unknown > wrong / 3, (unknown, wrong)


def test_old_parameters_are_flagged_for_rehashing() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(
        "violet harbour lantern 42"
    )
    assert PasswordHashing.needs_rehash(weak)
    assert not PasswordHashing.needs_rehash(hasher.hash("violet harbour lantern 42"))


async def test_hashing_runs_off_the_event_loop() -> None:
    """While hashes are computed, the loop keeps serving other work."""
    hashing = PasswordHashing(2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.gather(*(hashing.hash(f"violet harbour lantern {i}") for i in range(6)))
    task.cancel()
    assert ticks >= 3
