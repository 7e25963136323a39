"""User management pages: app/accounts/pages/users.py (both storage legs)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
from litestar import Litestar
from sqlalchemy import func, select

from app.accounts.models import AuditEntry, User
from app.settings import Settings
from tests.conftest import count_rows, signed_in

NEW_PASSWORD = "a long and unusual passphrase"


async def add_user(
    app: Litestar,
    username: str,
    *,
    role: str = "viewer",
    email: str | None = None,
    display_name: str = "",
    is_active: bool = True,
    created_at: datetime | None = None,
    last_login_at: datetime | None = None,
) -> User:
    """An extra account written straight to the database (no audit entry)."""
    async with app.state.sessionmaker() as session, session.begin():
        user = User(
            email=email or f"{username}@example.org",
            username=username,
            display_name=display_name,
            password_hash="not-a-usable-hash",
            role=role,
            is_active=is_active,
            failed_login_count=0,
            auth_version=1,
            last_login_at=last_login_at,
        )
        if created_at is not None:
            user.created_at = created_at
        session.add(user)
    return user


async def reload(app: Litestar, user_id: UUID) -> User | None:
    async with app.state.sessionmaker() as session:
        return await session.get(User, user_id)


async def audit_actions(app: Litestar) -> list[str]:
    async with app.state.sessionmaker() as session:
        query = select(AuditEntry.action).order_by(AuditEntry.created_at)
        return list((await session.scalars(query)).all())


async def user_count(app: Litestar) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(User)) or 0)


def listed(html: str) -> list[str]:
    """Usernames in the results table, in order."""
    return re.findall(r'<tr data-user="([^"]+)">', html)


def create_form(**changes: str) -> dict[str, str]:
    form = {
        "email": "newcomer@example.org",
        "username": "newcomer",
        "display_name": "New Comer",
        "role": "viewer",
        "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD,
    }
    return {**form, **changes}


# Reading -------------------------------------------------------------------------------


async def test_anonymous_visitors_are_sent_to_sign_in(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin/users?role=admin")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fadmin%2Fusers%3Frole%3Dadmin"


async def test_a_viewer_sees_every_account_in_the_list(app: Litestar, accounts: dict) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        response = await client.get("/admin/users")
    assert response.status_code == 200
    assert listed(response.text) == ["admin", "editor", "viewer"]
    assert '<a href="/admin/users" aria-current="page">Users</a>' in response.text
    assert "New user" not in response.text  # viewers read only
    assert "HX-Request" in response.headers["vary"]


async def test_search_matches_email_username_and_display_name_ignoring_case(
    app: Litestar, accounts: dict
) -> None:
    await add_user(app, "grace", email="g.hopper@navy.example", display_name="Grace Hopper")
    await add_user(app, "ada", display_name="Ada Lovelace")
    async with signed_in(app, accounts["viewer"]) as client:
        by_name = await client.get("/admin/users", params={"q": "HOPPER"})
        by_email = await client.get("/admin/users", params={"q": "navy.EXAMPLE"})
        by_username = await client.get("/admin/users", params={"q": "ad"})
        wildcard = await client.get("/admin/users", params={"q": "%"})
    assert listed(by_name.text) == ["grace"]
    assert listed(by_email.text) == ["grace"]
    assert listed(by_username.text) == ["ada", "admin"]
    assert listed(wildcard.text) == []  # LIKE wildcards are searched for literally
    assert 'value="HOPPER"' in by_name.text  # the form shows the current search


async def test_role_and_status_filters_narrow_the_list(app: Litestar, accounts: dict) -> None:
    await add_user(app, "sleeper", role="editor", is_active=False)
    async with signed_in(app, accounts["viewer"]) as client:
        editors = await client.get("/admin/users", params={"role": "editor"})
        inactive = await client.get("/admin/users", params={"status": "inactive"})
        active_editors = await client.get(
            "/admin/users", params={"role": "editor", "status": "active"}
        )
    assert listed(editors.text) == ["editor", "sleeper"]
    assert listed(inactive.text) == ["sleeper"]
    assert listed(active_editors.text) == ["editor"]
    assert '<option value="editor" selected>' in editors.text


async def test_sorting_follows_the_chosen_column_and_direction(
    app: Litestar, accounts: dict
) -> None:
    await add_user(app, "zed", email="aaa@example.org")
    async with signed_in(app, accounts["viewer"]) as client:
        by_email = await client.get("/admin/users", params={"sort": "email"})
        by_email_desc = await client.get("/admin/users", params={"sort": "-email"})
        by_role = await client.get("/admin/users", params={"sort": "-role"})
    assert listed(by_email.text) == ["zed", "admin", "editor", "viewer"]
    assert listed(by_email_desc.text) == ["viewer", "editor", "admin", "zed"]
    assert listed(by_role.text)[0] == "admin"  # roles sort by power, not alphabet
    # the active column links to the other direction and says how it is sorted
    assert 'aria-sort="ascending"' in by_email.text
    assert 'href="?sort=-email"' in by_email.text
    assert 'href="?sort=email"' in by_email_desc.text


async def test_pages_of_twenty_five_with_a_pager_that_keeps_the_filters(
    app: Litestar, accounts: dict
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for number in range(30):
        await add_user(app, f"reader{number:02d}", created_at=start + timedelta(hours=number))
    async with signed_in(app, accounts["viewer"]) as client:
        first = await client.get("/admin/users", params={"q": "reader", "sort": "created_at"})
        second = await client.get(
            "/admin/users", params={"q": "reader", "sort": "created_at", "page": 2}
        )
        beyond = await client.get("/admin/users", params={"q": "reader", "page": 9})
    assert listed(first.text) == [f"reader{n:02d}" for n in range(25)]
    assert listed(second.text) == [f"reader{n:02d}" for n in range(25, 30)]
    assert "Page 1 of 2 · 30 in all" in first.text
    assert 'href="?q=reader&amp;sort=created_at&amp;page=2"' in first.text
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    assert "There is no page 9" in beyond.text


async def test_nothing_matching_shows_an_empty_state(app: Litestar, accounts: dict) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        response = await client.get("/admin/users", params={"q": "nobody-like-this"})
    assert response.status_code == 200
    assert "No users match these filters." in response.text
    assert "<table" not in response.text


async def test_a_bad_filter_in_the_url_is_explained(app: Litestar, accounts: dict) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        response = await client.get("/admin/users", params={"sort": "password_hash"})
    assert response.status_code == 400
    assert "Sort by one of: username, email, role, created_at, last_login_at." in response.text


async def test_htmx_gets_only_the_results_block_and_a_clean_url_to_push(
    app: Litestar, accounts: dict
) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        response = await client.get(
            "/admin/users?q=edit&role=&status=&sort=username", headers={"HX-Request": "true"}
        )
        full = await client.get("/admin/users?q=edit")
    assert response.status_code == 200
    assert "HX-Request" in response.headers["vary"]
    assert response.headers["hx-push-url"] == "/admin/users?q=edit"
    body = response.text
    assert "<html" not in body and "admin-nav" not in body and 'id="user-filters"' not in body
    assert listed(body) == ["editor"]
    # the full page carries the form that asks for exactly this fragment
    assert 'hx-get="/admin/users" hx-target="#results"' in full.text
    assert 'hx-trigger="input changed delay:300ms, change" hx-push-url="true"' in full.text
    assert '<div id="results" aria-live="polite">' in full.text


async def test_a_viewer_reads_one_account_without_a_form(app: Litestar, accounts: dict) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        response = await client.get(f"/admin/users/{accounts['editor'].id}")
        missing = await client.get("/admin/users/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 200
    assert "editor@example.org" in response.text
    assert "You can look at this account but not change it." in response.text
    assert '<form method="post" hx-boost' not in response.text
    assert missing.status_code == 404


# Changing ------------------------------------------------------------------------------


async def test_viewers_cannot_change_anything(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    target = accounts["editor"].id
    before = await count_rows(settings, "audit_log")
    async with signed_in(app, accounts["viewer"]) as client:
        answers = [
            await client.get("/admin/users/new"),
            await client.post("/admin/users", data=create_form()),
            await client.post(f"/admin/users/{target}", data={"display_name": "Hacked"}),
            await client.post(f"/admin/users/{target}/deactivate"),
            await client.post(f"/admin/users/{target}/reset-link"),
            await client.get(f"/admin/users/{target}/delete"),
            await client.post(f"/admin/users/{target}/delete"),
        ]
    assert [answer.status_code for answer in answers] == [403] * len(answers)
    assert (await reload(app, target)).display_name == "Editor"  # type: ignore[union-attr]
    assert await count_rows(settings, "audit_log") == before


async def test_an_editor_creates_a_viewer_and_the_creation_is_audited(
    app: Litestar, accounts: dict
) -> None:
    async with signed_in(app, accounts["editor"]) as client:
        form_page = await client.get("/admin/users/new")
        response = await client.post("/admin/users", data=create_form())
    assert form_page.status_code == 200
    assert '<option value="admin"' not in form_page.text  # editors cannot give admin
    assert response.status_code == 303
    async with app.state.sessionmaker() as session:
        user = await session.scalar(select(User).where(User.username == "newcomer"))
    assert user is not None and user.role == "viewer" and user.display_name == "New Comer"
    assert response.headers["location"] == f"/admin/users/{user.id}?notice=created"
    assert "user.created" in await audit_actions(app)


async def test_create_errors_come_back_beside_the_field_with_the_input_kept(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    cases = {
        "email": (create_form(email="EDITOR@example.org"), "An account with this e-mail"),
        "username": (create_form(username="no spaces"), "Use 3-64 letters"),
        "password": (
            create_form(password="password1234", password_confirm="password1234"),
            "common passwords",
        ),
        "password_confirm": (create_form(password_confirm="something else"), "differ"),
    }
    users, audits = await user_count(app), await count_rows(settings, "audit_log")
    async with signed_in(app, accounts["editor"]) as client:
        for field, (form, message) in cases.items():
            response = await client.post("/admin/users", data=form)
            assert response.status_code == 400, field
            error = re.search(rf'<p class="error" id="e-{field}">([^<]+)</p>', response.text)
            assert error and message in error.group(1), field
            assert f'value="{form["display_name"]}"' in response.text  # input kept
            assert NEW_PASSWORD not in response.text and "password1234" not in response.text
    assert await user_count(app) == users
    assert await count_rows(settings, "audit_log") == audits


async def test_a_weak_short_password_is_refused(app: Litestar, accounts: dict) -> None:
    async with signed_in(app, accounts["admin"]) as client:
        response = await client.post(
            "/admin/users", data=create_form(password="short", password_confirm="short")
        )
    assert response.status_code == 400
    assert "Use at least 12 characters." in response.text


async def test_an_editor_cannot_create_edit_promote_or_remove_an_admin(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    admin, viewer = accounts["admin"].id, accounts["viewer"].id
    before = await count_rows(settings, "audit_log")
    async with signed_in(app, accounts["editor"]) as client:
        answers = {
            "create admin": await client.post("/admin/users", data=create_form(role="admin")),
            "edit admin": await client.post(f"/admin/users/{admin}", data={"display_name": "X"}),
            "promote viewer": await client.post(f"/admin/users/{viewer}", data={"role": "admin"}),
            "deactivate admin": await client.post(f"/admin/users/{admin}/deactivate"),
            "reset admin": await client.post(f"/admin/users/{admin}/reset-link"),
            "confirm delete admin": await client.get(f"/admin/users/{admin}/delete"),
            "delete admin": await client.post(f"/admin/users/{admin}/delete"),
        }
        admin_page = await client.get(f"/admin/users/{admin}")
    assert {name: r.status_code for name, r in answers.items()} == dict.fromkeys(answers, 403)
    assert (await reload(app, viewer)).role == "viewer"  # type: ignore[union-attr]
    assert (await reload(app, admin)).is_active  # type: ignore[union-attr]
    assert await count_rows(settings, "audit_log") == before
    assert "You can look at this account but not change it." in admin_page.text


async def test_an_editor_edits_a_viewer_and_makes_them_an_editor(
    app: Litestar, accounts: dict
) -> None:
    viewer = accounts["viewer"]
    form = {
        "email": "Reader@Example.org",
        "username": "reader",
        "display_name": "Rea Der",
        "role": "editor",
    }
    async with signed_in(app, accounts["editor"]) as client:
        page = await client.get(f"/admin/users/{viewer.id}")
        response = await client.post(f"/admin/users/{viewer.id}", data=form)
        after = await client.get(response.headers["location"])
    assert 'value="viewer@example.org"' in page.text
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/users/{viewer.id}?notice=saved"
    assert "Your changes were saved." in after.text
    user = await reload(app, viewer.id)
    assert user is not None
    assert (user.email, user.username, user.display_name, user.role) == (
        "reader@example.org",
        "reader",
        "Rea Der",
        "editor",
    )
    async with app.state.sessionmaker() as session:
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "user.updated"))
    assert entry is not None and entry.resource_id == str(viewer.id)
    assert entry.details["changes"]["role"] == ["viewer", "editor"]  # type: ignore[index]


async def test_edit_errors_keep_the_input_and_change_nothing(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    viewer = accounts["viewer"]
    before = await count_rows(settings, "audit_log")
    async with signed_in(app, accounts["editor"]) as client:
        taken = await client.post(
            f"/admin/users/{viewer.id}",
            data={"email": "viewer@example.org", "username": "EDITOR", "display_name": "Kept"},
        )
        bad_email = await client.post(
            f"/admin/users/{viewer.id}",
            data={"email": "not-an-address", "username": "viewer", "display_name": "Kept"},
        )
    assert taken.status_code == 400 and "This username is taken." in taken.text
    assert bad_email.status_code == 400 and "Enter a valid e-mail address." in bad_email.text
    assert 'value="not-an-address"' in bad_email.text and 'value="Kept"' in bad_email.text
    user = await reload(app, viewer.id)
    assert user is not None and (user.username, user.display_name) == ("viewer", "Viewer")
    assert await count_rows(settings, "audit_log") == before


async def test_the_last_active_admin_cannot_be_demoted_deactivated_or_deleted(
    app: Litestar, accounts: dict
) -> None:
    admin = accounts["admin"]
    form = {"email": admin.email, "username": admin.username, "role": "editor"}
    async with signed_in(app, admin) as client:
        demote = await client.post(f"/admin/users/{admin.id}", data=form)
        deactivate = await client.post(f"/admin/users/{admin.id}/deactivate")
        delete = await client.post(f"/admin/users/{admin.id}/delete")
    assert demote.status_code == 409
    assert "This is the last active admin" in demote.text
    assert deactivate.status_code == 409 and delete.status_code == 409
    user = await reload(app, admin.id)
    assert user is not None and user.role == "admin" and user.is_active


async def test_deactivation_ends_the_users_sessions_and_reactivation_is_audited(
    app: Litestar, accounts: dict
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, viewer) as victim, signed_in(app, accounts["editor"]) as editor:
        assert (await victim.get("/admin")).status_code == 200
        response = await editor.post(f"/admin/users/{viewer.id}/deactivate")
        assert response.status_code == 303
        assert response.headers["location"] == f"/admin/users/{viewer.id}?notice=deactivated"
        after = await victim.get("/admin")
        assert after.status_code == 303 and after.headers["location"].startswith("/login")
        page = await editor.get(f"/admin/users/{viewer.id}")
        assert "Reactivate" in page.text and "Inactive" in page.text
        assert (await editor.post(f"/admin/users/{viewer.id}/reactivate")).status_code == 303
        # the old session stays ended: reactivation does not bring it back
        assert (await victim.get("/admin")).status_code == 303
    user = await reload(app, viewer.id)
    assert user is not None and user.is_active
    assert (await audit_actions(app)).count("user.updated") == 2


async def test_delete_asks_for_confirmation_then_removes_the_account(
    app: Litestar, accounts: dict
) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, accounts["editor"]) as client:
        confirm = await client.get(f"/admin/users/{viewer.id}/delete")
        assert await reload(app, viewer.id) is not None  # looking does not delete
        response = await client.post(f"/admin/users/{viewer.id}/delete")
        listing = await client.get(response.headers["location"])
    assert confirm.status_code == 200
    assert "Delete viewer?" in confirm.text
    assert f'action="/admin/users/{viewer.id}/delete"' in confirm.text
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/users?notice=deleted"
    assert await reload(app, viewer.id) is None
    assert "The account was deleted." in listing.text and "viewer" not in listed(listing.text)
    assert "user.deleted" in await audit_actions(app)


async def test_a_post_without_the_csrf_token_is_refused(
    app: Litestar, accounts: dict, settings: Settings
) -> None:
    before = await user_count(app)
    async with signed_in(app, accounts["admin"]) as client:
        del client.headers["X-CSRF-Token"]
        response = await client.post("/admin/users", data=create_form())
        deactivate = await client.post(f"/admin/users/{accounts['viewer'].id}/deactivate")
    assert response.status_code == 403 and deactivate.status_code == 403
    assert await user_count(app) == before
    assert (await reload(app, accounts["viewer"].id)).is_active  # type: ignore[union-attr]


async def test_a_reset_link_is_shown_once_and_never_cached(app: Litestar, accounts: dict) -> None:
    viewer = accounts["viewer"]
    async with signed_in(app, accounts["editor"]) as client:
        response = await client.post(f"/admin/users/{viewer.id}/reset-link")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    link = re.search(
        r"<code data-reset-url>(http://127\.0\.0\.1:8000/reset/[\w-]+)</code>", response.text
    )
    assert link, "the page shows the link"
    assert "user.password_reset_link_created" in await audit_actions(app)
