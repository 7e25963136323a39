"""The guestbook: visitors sign it on /p/guestbook/ or through the API, editors approve
entries on /admin/plugins/guestbook/. It imports nothing of Keel but `keel.plugin`."""

from __future__ import annotations

from keel.plugin import Plugin

from .api import ROUTES
from .pages import ADMIN_PAGES, PAGES


class Guestbook(Plugin):
    api_routes = ROUTES
    pages = PAGES
    admin_pages = ADMIN_PAGES
    admin_menu_label = "Guestbook"
