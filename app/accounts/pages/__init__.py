"""HTML pages of the accounts domain, one module per area."""

from app.accounts.pages.account import AccountController
from app.accounts.pages.api_keys import ApiKeysAdminController
from app.accounts.pages.audit import AuditAdminController
from app.accounts.pages.reset import ForgotPasswordController, PasswordResetController
from app.accounts.pages.sign_in import SignInController
from app.accounts.pages.users import UsersAdminController
from app.accounts.pages.verify import VerifyEmailController

__all__ = (
    "AccountController",
    "ApiKeysAdminController",
    "AuditAdminController",
    "ForgotPasswordController",
    "PasswordResetController",
    "SignInController",
    "UsersAdminController",
    "VerifyEmailController",
)
