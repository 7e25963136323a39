"""JSON API of the accounts domain, one module per area."""

from app.accounts.api.api_keys import ApiKeysController
from app.accounts.api.audit import AuditController
from app.accounts.api.auth import AuthController
from app.accounts.api.users import UsersController

__all__ = (
    "ApiKeysController",
    "AuditController",
    "AuthController",
    "UsersController",
)
