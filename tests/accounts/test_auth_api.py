"""`/api/v1/auth`: access and refresh tokens, and the attacks they must resist."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from dataclasses import replace
from pathlib import Path

import httpx
import jwt
import pytest
from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import AuditEntry, Role, TokenFamily, User
from app.accounts.services.api_keys import create_api_key
from app.accounts.services.audit import Actor
from app.accounts.services.tokens import ALGORITHM, AUDIENCE, ISSUER, InvalidToken
from app.core.db import create_engine, create_sessionmaker
from app.settings import Settings
from tests.accounts.test_rate_limit import app_with
from tests.conftest import PASSWORD, client_for, own_valkey, signed_in

# The attack tokens below are signed with deliberately poor keys.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


async def _login(client: httpx.AsyncClient, login: str = "editor") -> dict:
    response = await client.post("/api/v1/auth/login", json={"login": login, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return response.json()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _family(app: Litestar, user: User) -> str:
    """The id (`fam`) of a new sign-in of `user`, as a login starts one."""
    async with app.state.sessionmaker() as session, session.begin():
        family, _ = await app.state.refresh_tokens.start(session, user.id, user.auth_version)
    return family.hex


def _forge(app: Litestar, user: User, **changes: object) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user.id),
        "role": user.role,
        "ver": 1,
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, app.state.access_tokens.key, algorithm=ALGORITHM)


async def test_login_returns_an_access_and_a_refresh_token(
    client: httpx.AsyncClient, app: Litestar
) -> None:
    body = await _login(client)
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 30 * 60
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert {"iss", "aud", "sub", "role", "jti", "iat", "exp"} <= set(claims)
    assert claims["role"] == "editor" and claims["exp"] - claims["iat"] == 30 * 60
    me = await client.get("/api/v1/auth/me", headers=_bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == "editor" and me.json()["via"] == "token"


async def test_a_wrong_password_is_401_with_a_problem_body(
    client: httpx.AsyncClient, accounts: dict
) -> None:
    response = await client.post(
        "/api/v1/auth/login", json={"login": "editor", "password": "nope nope nope"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"login": "ghost", "password": "nope nope nope"}
    )
    assert response.status_code == unknown.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"] == unknown.json()["detail"]


async def test_a_malformed_login_body_is_400(client: httpx.AsyncClient, accounts: dict) -> None:
    response = await client.post("/api/v1/auth/login", json={"login": "editor"})
    assert response.status_code == 400
    assert response.json()["errors"]


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: httpx.AsyncClient, app: Litestar
) -> None:
    first = await _login(client)
    second = (
        await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (
        await client.get("/api/v1/auth/me", headers=_bearer(second["access_token"]))
    ).status_code == 200
    reused = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reused.status_code == 401
    assert "already used" in reused.json()["detail"]
    # the thief's reuse also kills the legitimate holder's newer token
    latest = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert latest.status_code == 401


async def test_logout_revokes_the_access_token_and_the_refresh_family(
    client: httpx.AsyncClient, app: Litestar
) -> None:
    tokens = await _login(client)
    headers = _bearer(tokens["access_token"])
    out = await client.post(
        "/api/v1/auth/logout", headers=headers, json={"refresh_token": tokens["refresh_token"]}
    )
    assert out.status_code == 204
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refresh.status_code == 401


async def test_sign_out_everywhere_ends_every_browser_session_and_token_of_the_caller(
    client: httpx.AsyncClient, app: Litestar, accounts: dict[str, User]
) -> None:
    """The API twin of the account page's button: one call, and the caller's browsers and
    every sign-in of theirs (the token in use included) are refused; others are untouched."""
    editor = accounts["editor"]
    this, other = await _login(client), await _login(client)
    async with (
        signed_in(app, editor) as browser,
        signed_in(app, accounts["viewer"]) as bystander,
    ):
        assert (await browser.get("/account")).status_code == 200
        answer = await client.post(
            "/api/v1/auth/sign-out-everywhere", headers=_bearer(this["access_token"])
        )
        assert answer.status_code == 204 and answer.content == b""
        assert (await browser.get("/account")).status_code == 303  # sent to sign in
        assert (await bystander.get("/account")).status_code == 200
    for tokens in (this, other):
        me = await client.get("/api/v1/auth/me", headers=_bearer(tokens["access_token"]))
        assert me.status_code == 401
        refresh = {"refresh_token": tokens["refresh_token"]}
        assert (await client.post("/api/v1/auth/refresh", json=refresh)).status_code == 401
    assert await app.state.sessions.list_for_user(editor.id) == []
    async with app.state.sessionmaker() as session:
        query = select(AuditEntry).where(AuditEntry.action == "auth.signed_out_everywhere")
        [entry] = (await session.scalars(query)).all()
    assert (entry.user_id, entry.resource_id, entry.details) == (
        editor.id,
        str(editor.id),
        {"sessions": 1},
    )
    again = await _login(client)  # signing in again works as before
    me = await client.get("/api/v1/auth/me", headers=_bearer(again["access_token"]))
    assert me.status_code == 200


async def test_sign_out_everywhere_needs_a_signed_in_person(
    client: httpx.AsyncClient, app: Litestar, accounts: dict[str, User]
) -> None:
    """Anonymous callers get 401; an API key, which has no sign-ins, 403."""
    anonymous = await client.post("/api/v1/auth/sign-out-everywhere")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    async with app.state.sessionmaker() as session, session.begin():
        admin = accounts["admin"]
        actor = Actor(admin.id, admin.username)
        _, secret = await create_api_key(session, actor, Role.admin, admin.id, "ops", "admin", None)
    by_key = await client.post("/api/v1/auth/sign-out-everywhere", headers={"X-API-Key": secret})
    assert by_key.status_code == 403
    assert (await _fresh_version(app, admin)) == admin.auth_version


async def _fresh_version(app: Litestar, user: User) -> int:
    async with app.state.sessionmaker() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        return stored.auth_version


ATTACKS = (
    "alg_none",
    "wrong_key",
    "expired",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "missing_jti",
    "missing_exp",
    "kid_header",
    "jku_header",
    "hs_with_public_key_confusion",
)


def _attack_token(app: Litestar, user: User, family: str, attack: str) -> str:
    """A token for `user` of the live sign-in `family`, made as the attack `attack` would
    make it."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user.id),
        "jti": "x",
        "ver": 1,
        "fam": family,
        "iat": now,
        "exp": now + 600,
    }
    if attack == "alg_none":
        header = base64.urlsafe_b64encode(
            json.dumps({"alg": "none", "typ": "JWT"}).encode()
        ).rstrip(b"=")
        payload = base64.urlsafe_b64encode(json.dumps({**claims, "role": "admin"}).encode())
        return f"{header.decode()}.{payload.rstrip(b'=').decode()}."
    if attack == "wrong_key":
        return jwt.encode(claims, "x" * 64, algorithm="HS256")
    if attack == "expired":
        return _forge(app, user, fam=family, iat=now - 7200, nbf=now - 7200, exp=now - 3600)
    if attack == "not_yet_valid":
        return _forge(app, user, fam=family, iat=now + 3600, nbf=now + 3600, exp=now + 7200)
    if attack == "wrong_audience":
        return _forge(app, user, fam=family, aud="someone-else")
    if attack == "wrong_issuer":
        return _forge(app, user, fam=family, iss="evil")
    if attack == "missing_jti":
        return _forge(app, user, fam=family, jti=None)
    if attack == "missing_exp":
        return _forge(app, user, fam=family, exp=None)
    if attack == "kid_header":
        return jwt.encode(claims, "attacker-key", "HS256", headers={"kid": "../../dev/null"})
    if attack == "jku_header":
        headers = {"jku": "https://evil.example/keys"}
        return jwt.encode(claims, "attacker-key", "HS256", headers=headers)
    # HS512 signed with the real key: the algorithm is pinned, so still refused
    return jwt.encode(claims, app.state.access_tokens.key, algorithm="HS512")


async def test_tampered_or_invalid_tokens_are_401(
    client: httpx.AsyncClient, app: Litestar, accounts: dict
) -> None:
    family = await _family(app, accounts["admin"])
    for attack in ATTACKS:  # one app for all: building it is what a test costs
        token = _attack_token(app, accounts["admin"], family, attack)
        response = await client.get("/api/v1/auth/me", headers=_bearer(token))
        assert response.status_code == 401, attack
        assert response.headers["content-type"].startswith("application/problem+json"), attack
        assert response.headers["www-authenticate"].startswith("Bearer"), attack


async def test_a_correctly_forged_token_is_accepted_so_the_attack_tests_mean_something(
    client: httpx.AsyncClient, app: Litestar, accounts: dict
) -> None:
    admin = accounts["admin"]
    token = _forge(app, admin, fam=await _family(app, admin))
    response = await client.get("/api/v1/auth/me", headers=_bearer(token))
    assert response.status_code == 200


@pytest.mark.parametrize("change", ["deactivate", "demote"])
async def test_deactivation_and_role_changes_apply_before_token_expiry(
    client: httpx.AsyncClient, app: Litestar, settings: Settings, change: str
) -> None:
    tokens = await _login(client, "editor")
    headers = _bearer(tokens["access_token"])
    engine = create_engine(settings.db)
    async with create_sessionmaker(engine)() as session, session.begin():
        from sqlalchemy import select

        user = await session.scalar(select(User).where(User.username == "editor"))
        if change == "deactivate":
            user.is_active = False
        else:
            user.role = "viewer"
    await engine.dispose()
    me = await client.get("/api/v1/auth/me", headers=headers)
    if change == "deactivate":
        assert me.status_code == 401
        refresh = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refresh.status_code == 401
    else:
        assert me.status_code == 200 and me.json()["role"] == "viewer"


async def test_api_ignores_session_cookies(app: Litestar, accounts: dict) -> None:
    from tests.conftest import signed_in

    async with signed_in(app, accounts["admin"]) as browser:
        assert (await browser.get("/admin")).status_code == 200
        assert (await browser.get("/api/v1/auth/me")).status_code == 401


async def test_unknown_authorization_schemes_are_refused(
    client: httpx.AsyncClient, accounts: dict
) -> None:
    response = await client.get(
        "/api/v1/auth/me", headers={"Authorization": "Basic YWRtaW46YWRtaW4="}
    )
    assert response.status_code == 401


async def test_login_throttling_holds_when_valkey_is_down(services_settings: Settings) -> None:
    """The store is unreachable: failed logins are still counted (per process) and refused."""
    from dataclasses import replace

    from app.asgi import create_app
    from tests.conftest import client_for, free_port

    settings = services_settings
    down = replace(
        settings, store=replace(settings.store, url=f"redis://127.0.0.1:{free_port()}/0")
    )
    app = create_app(down)
    try:
        async with client_for(app) as client:
            statuses = []
            for _ in range(settings.auth.login_max_failures + 1):
                response = await client.post(
                    "/api/v1/auth/login", json={"login": "nobody", "password": "wrong password!!"}
                )
                statuses.append(response.status_code)
        assert statuses[:-1] == [401] * settings.auth.login_max_failures
        assert statuses[-1] == 429
    finally:
        await app.state.engine.dispose()
        await app.state.store.close()


async def test_a_token_accepted_before_is_refused_once_it_expires(
    client: httpx.AsyncClient, app: Litestar, accounts: dict
) -> None:
    """The process remembers tokens it has verified; expiry still ends them on time."""
    admin = accounts["admin"]
    token = _forge(app, admin, fam=await _family(app, admin), exp=int(time.time()) + 2)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
    assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
    await asyncio.sleep(2.1)
    refused = await client.get("/api/v1/auth/me", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "The access token has expired."


async def test_a_signed_out_token_stays_signed_out_when_the_store_loses_its_data(
    settings: Settings, accounts: dict, tmp_path: Path
) -> None:
    """Issue 12 #3: revocation lived only in the store, so once Valkey restarted empty (or
    the embedded process restarted: each app here is a process with its own memory store)
    a signed-out access token answered 200 again until it expired. The database keeps it."""
    async with contextlib.AsyncExitStack() as stack:
        if not settings.store.is_memory:  # the services leg: a Valkey of this test's own
            url = await stack.enter_async_context(own_valkey(tmp_path))
            settings = replace(settings, store=replace(settings.store, url=url))
        async with app_with(settings) as app, client_for(app) as client:
            tokens = await _login(client)
            headers = _bearer(tokens["access_token"])
            assert (await client.post("/api/v1/auth/logout", headers=headers)).status_code == 204
            assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 401
            if not settings.store.is_memory:
                await app.state.store.client.flushall()
        # Valkey empty, or the embedded process started again with an empty memory store
        async with app_with(settings) as app, client_for(app) as client:
            me = await client.get("/api/v1/auth/me", headers=headers)
            assert me.status_code == 401 and me.json()["detail"].endswith("revoked.")
            refresh = {"refresh_token": tokens["refresh_token"]}
            assert (await client.post("/api/v1/auth/refresh", json=refresh)).status_code == 401


async def test_logout_with_the_access_token_alone_ends_its_refresh_tokens_too(
    client: httpx.AsyncClient, app: Litestar
) -> None:
    tokens = await _login(client)
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 200
    newest = refreshed.json()
    out = await client.post("/api/v1/auth/logout", headers=_bearer(newest["access_token"]))
    assert out.status_code == 204
    for access in (tokens["access_token"], newest["access_token"]):
        assert (await client.get("/api/v1/auth/me", headers=_bearer(access))).status_code == 401
    again = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": newest["refresh_token"]}
    )
    assert again.status_code == 401
    other = await _login(client)  # another sign-in of the same user is another family
    assert (await client.get("/api/v1/auth/me", headers=_bearer(other["access_token"]))).is_success


async def test_two_concurrent_rotations_of_one_refresh_token_let_exactly_one_through(
    client: httpx.AsyncClient, app: Litestar
) -> None:
    """Issue 12 #4: rotation was get, check, set in the store, so two requests presenting
    the same token could both get a new pair. The loser of the race is a reuse: the
    family ends, the winner's new tokens included. A race: several rounds, one winner each."""
    for round_ in range(3):
        tokens = await _login(client)
        body = {"refresh_token": tokens["refresh_token"]}
        results = await asyncio.gather(
            client.post("/api/v1/auth/refresh", json=body),
            client.post("/api/v1/auth/refresh", json=body),
        )
        assert sorted(r.status_code for r in results) == [200, 401], round_
        loser = next(r for r in results if r.status_code == 401)
        assert "already used" in loser.json()["detail"]
        winner = next(r for r in results if r.status_code == 200).json()
        again = await client.post(
            "/api/v1/auth/refresh", json={"refresh_token": winner["refresh_token"]}
        )
        assert again.status_code == 401
        for access in (tokens["access_token"], winner["access_token"]):
            me = await client.get("/api/v1/auth/me", headers=_bearer(access))
            assert me.status_code == 401, round_


async def test_a_rotation_that_reaches_the_database_during_another_waits_and_ends_the_family(
    app: Litestar, accounts: dict
) -> None:
    """The race of two rotations at its narrowest, without HTTP timing: the second spends
    the token while the first's transaction is still open. It must wait for that COMMIT
    (row lock on PostgreSQL, the write lock on SQLite), then find the token spent: a reuse,
    which revokes the family, the winner's new refresh token included."""
    user, tokens = accounts["editor"], app.state.refresh_tokens
    async with app.state.sessionmaker() as session, session.begin():
        family, refresh = await tokens.start(session, user.id, user.auth_version)
    async with app.state.sessionmaker() as first, app.state.sessionmaker() as second:
        won = await tokens.rotate(first, refresh)
        late = asyncio.create_task(tokens.rotate(second, refresh))
        await asyncio.sleep(0.5)
        assert not late.done(), "the second spend did not wait for the first transaction"
        await first.commit()
        with pytest.raises(InvalidToken, match="already used"):
            await asyncio.wait_for(late, 10)
    async with app.state.sessionmaker() as session:
        assert (await session.get(TokenFamily, family)).revoked_at is not None
        with pytest.raises(InvalidToken, match="revoked"):
            await tokens.rotate(session, won.refresh_token)


async def test_logout_signs_out_the_token_the_caller_was_identified_by(
    client: httpx.AsyncClient, app: Litestar
) -> None:
    """Logout read the token a second time from the `Authorization` header (split at its
    first space), not the claims the identity layer had verified: a header that layer
    accepts, like `Bearer` and two spaces, answered 500 there and signed nothing out."""
    tokens = await _login(client)
    spaced = {"Authorization": f"Bearer  {tokens['access_token']}"}
    assert (await client.get("/api/v1/auth/me", headers=spaced)).status_code == 200
    assert (await client.post("/api/v1/auth/logout", headers=spaced)).status_code == 204
    me = await client.get("/api/v1/auth/me", headers=_bearer(tokens["access_token"]))
    assert me.status_code == 401


async def test_an_access_token_without_its_family_is_refused(
    client: httpx.AsyncClient, app: Litestar, accounts: dict
) -> None:
    """Revoking a sign-in's family is what signs its tokens out, so a token that names no
    family (`fam`) could never be signed out with its sign-in: it is not valid at all."""
    admin = accounts["admin"]
    refused = await client.get("/api/v1/auth/me", headers=_bearer(_forge(app, admin)))
    assert refused.status_code == 401
    assert refused.json()["detail"] == "The access token is not valid."
    unknown = _forge(app, admin, fam=uuid.uuid4().hex)
    assert (await client.get("/api/v1/auth/me", headers=_bearer(unknown))).status_code == 401
    live = _forge(app, admin, fam=await _family(app, admin))
    assert (await client.get("/api/v1/auth/me", headers=_bearer(live))).status_code == 200


async def test_token_responses_are_never_stored(client: httpx.AsyncClient, app: Litestar) -> None:
    """RFC 6749 §5.1: a response holding tokens carries `Cache-Control: no-store`. The
    login and the refresh answer anonymous callers, whose responses were not marked."""
    login = await client.post("/api/v1/auth/login", json={"login": "editor", "password": PASSWORD})
    assert login.status_code == 200 and login.headers["cache-control"] == "no-store"
    refresh = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
    )
    assert refresh.status_code == 200 and refresh.headers["cache-control"] == "no-store"
