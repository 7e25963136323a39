"""Account rules: app/accounts/services/users.py called directly (both legs). A refused
change leaves the account and the session as they were, so no page has to roll back."""

from __future__ import annotations

import pytest
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Role, User
from app.accounts.services import users
from app.accounts.services.audit import Actor
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.users import (
    AccountConflict,
    AccountError,
    AccountForbidden,
    InvalidAccount,
    NewUser,
    create_user,
    update_user,
)
from tests.accounts.test_users_pages import add_user, audit_actions, reload


def untouched(session: AsyncSession) -> bool:
    return not session.dirty and not session.new and not session.deleted


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"email": "new@example.org", "role": "admin"}, AccountForbidden),
        ({"display_name": "New name", "role": "nonsense"}, InvalidAccount),
        ({"username": "renamed", "is_active": False}, AccountConflict),
    ],
)
async def test_a_refused_edit_changes_no_field_of_the_account(
    app: Litestar, accounts: dict, changes: dict, refusal: type[AccountError]
) -> None:
    """update_user checks every rule before it sets any field: a bad role after a good
    e-mail address used to leave the address changed in the session."""
    editor = accounts["editor"]
    actor = Actor(editor.id, editor.username)
    target = await add_user(app, "target", display_name="Target")
    if refusal is AccountConflict:  # deactivating yourself
        target, actor = editor, Actor(editor.id, editor.username)
    async with app.state.sessionmaker() as session:
        user = await session.get(User, target.id)
        assert user is not None
        before = (user.email, user.username, user.display_name, user.role, user.is_active)
        with pytest.raises(refusal):
            await update_user(session, actor, Role.editor, user, **changes)
        assert untouched(session)
        assert (user.email, user.username, user.display_name, user.role, user.is_active) == before
        await session.commit()
    assert (await reload(app, target.id)).email == before[0]  # type: ignore[union-attr]
    assert "user.updated" not in await audit_actions(app)


async def test_an_account_that_loses_its_address_to_a_concurrent_sign_up_adds_nothing(
    app: Litestar, accounts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The address check passed, then another transaction took the address before this
    one's INSERT (the unique index refuses it): nothing is left pending in the session."""
    admin = accounts["admin"]

    async def nothing_taken(*_args: object, **_kwargs: object) -> tuple[set[str], set[str]]:
        return set(), set()

    monkeypatch.setattr(users, "taken_logins", nothing_taken)
    data = NewUser("viewer@example.org", "another", "a long and unusual passphrase")
    async with app.state.sessionmaker() as session:
        with pytest.raises(AccountConflict):
            await create_user(
                session, PasswordHashing(1), Actor(admin.id, "admin"), Role.admin, data
            )
        assert untouched(session)
        assert await session.get(User, admin.id) is not None  # the session still works
    assert "user.created" not in await audit_actions(app)
