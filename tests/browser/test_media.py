"""Media in Chromium: a document that may run script is saved, never shown on the site."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, sign_in
from tests.content.test_media import PDF_WITH_SCRIPT

pytestmark = pytest.mark.browser


def test_a_pdf_from_the_library_is_downloaded_and_the_page_stays(
    page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    sign_in(page, live_server)
    page.goto(live_server.url("/admin/media"))
    pdf = tmp_path / "Quarterly report.pdf"
    pdf.write_bytes(PDF_WITH_SCRIPT)
    page.set_input_files("#f-file", str(pdf))
    page.click("main button:has-text('Upload')")
    card = page.locator("[data-media]", has_text="Quarterly report.pdf")
    expect(card).to_be_visible()
    page.evaluate("window.__keel_marker = 'library'")

    with page.expect_download() as download:
        card.locator("a.media-preview").click()

    assert download.value.suggested_filename == "Quarterly report.pdf"
    assert Path(download.value.path()).read_bytes() == PDF_WITH_SCRIPT
    expect(page).to_have_url(live_server.url("/admin/media?notice=uploaded"))
    expect(page.locator("h1")).to_have_text("Media")
    assert page.evaluate("window.__keel_marker") == "library"

    # Leave the shared server's library as it was (other tests read its first card).
    card.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete file").click()
    expect(page.locator("[data-media]", has_text="Quarterly report.pdf")).to_have_count(0)
    assert page.console_errors == []  # type: ignore[attr-defined]
