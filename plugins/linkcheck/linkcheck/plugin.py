"""Link check: a periodic job visits the published pages and posts (Keel's shared view),
checks every link and image they hold, and lists the broken ones on
/admin/plugins/linkcheck/ and in a dashboard widget. It imports nothing of Keel but
`keel.plugin`."""

from __future__ import annotations

from datetime import timedelta

from keel.plugin import Job, Plugin, Schedule, Widget

from .pages import ADMIN_PAGES, API_ROUTES, CHECK_JOB, broken_links_widget
from .report import run_check

TICK = timedelta(minutes=5)
"""How often the schedule asks whether a run is due (`interval_minutes` decides)."""


class LinkCheck(Plugin):
    admin_pages = ADMIN_PAGES
    api_routes = API_ROUTES
    admin_menu_label = "Link check"
    jobs = [Job(CHECK_JOB, run_check, max_attempts=1, role="editor")]
    schedules = [Schedule("linkcheck.tick", CHECK_JOB, every=TICK)]
    widgets = [Widget("Broken links", broken_links_widget)]
