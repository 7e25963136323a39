"""Every rule about accounts, for the pages, the API and the `keel users` command alike.

`users` creates, finds, changes and deletes accounts; `sign_in` covers the first run and
signing in; `passwords` covers password changes and one-time reset links.
"""

from app.accounts.services.passwords import (
    RESET_LINK_KEY,
    RESET_LINK_SECONDS,
    PasswordResetInvalid,
    change_password,
    consume_password_reset,
    create_password_reset,
    find_password_reset,
    request_password_reset,
    reset_link,
    send_password_setup,
    set_password,
)
from app.accounts.services.sign_in import (
    SETUP_MARKER,
    LoginFailed,
    authenticate,
    create_first_admin,
    sign_in_with_password,
)
from app.accounts.services.users import (
    EMAIL,
    USER_SORTS,
    USER_STATUSES,
    USERNAME,
    AccountError,
    NewUser,
    can_manage,
    create_user,
    delete_user,
    find_by_login,
    get_user,
    list_users,
    register_user,
    update_user,
    users_exist,
)
from app.accounts.services.verification import (
    VerificationInvalid,
    find_verification,
    send_address_verification,
    verify_address,
)

__all__ = (
    "EMAIL",
    "RESET_LINK_KEY",
    "RESET_LINK_SECONDS",
    "SETUP_MARKER",
    "USERNAME",
    "USER_SORTS",
    "USER_STATUSES",
    "AccountError",
    "LoginFailed",
    "NewUser",
    "PasswordResetInvalid",
    "VerificationInvalid",
    "authenticate",
    "can_manage",
    "change_password",
    "consume_password_reset",
    "create_first_admin",
    "create_password_reset",
    "create_user",
    "delete_user",
    "find_by_login",
    "find_password_reset",
    "find_verification",
    "get_user",
    "list_users",
    "register_user",
    "request_password_reset",
    "reset_link",
    "send_address_verification",
    "send_password_setup",
    "set_password",
    "sign_in_with_password",
    "update_user",
    "users_exist",
    "verify_address",
)
