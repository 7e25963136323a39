"""The media library: app/content/services/media.py, its pages and its API (both storage legs)."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from PIL import Image
from sqlalchemy import select

from app.accounts.models import AuditEntry, User
from app.accounts.services.audit import Actor
from app.asgi import create_app
from app.content.models import Media
from app.content.services.entries import EntryInput, publish_entry, save_entry
from app.content.services.media import display_name, store_upload
from app.settings import ROOT, Settings
from app.site_settings.services import write_setting
from tests.conftest import bearer, client_for, count_rows, signed_in, with_app_settings

STORED = re.compile(r"^[0-9a-f]{32}\.(png|jpg|gif|webp|pdf)$")
LONG_CACHE = "public, max-age=31536000, immutable"
PDF_BYTES = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
EXECUTABLE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\x00" * 200
HTML = b"<!doctype html><html><body><script>alert(1)</script></body></html>"
PDF_WITH_SCRIPT = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R /OpenAction 3 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"3 0 obj\n<< /S /JavaScript /JS (app.alert(document.cookie)) >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)
MEDIA_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
"""A stored file, opened on its own, is a document without script, plugins or requests."""
SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
    b"<script>alert(1)</script></svg>"
)


def image_bytes(format: str, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, "white" if mode != "1" else 1).save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def app(
    settings: Settings, accounts: dict[str, User], media_dir: Path
) -> AsyncIterator[Litestar]:
    """The set-up app, storing media in this test's own directory."""
    application = create_app(with_app_settings(settings, media_dir=media_dir))
    yield application
    await application.state.engine.dispose()
    await application.state.store.close()


async def api_upload(
    app: Litestar,
    user: User,
    name: str,
    content: bytes,
    claimed_type: str = "application/octet-stream",
    alt_text: str = "",
) -> httpx.Response:
    async with client_for(app) as client:
        return await client.post(
            "/api/v1/media",
            files={"file": (name, content, claimed_type)},
            data={"alt_text": alt_text},
            headers=await bearer(app, user),
        )


async def page_upload(
    app: Litestar,
    user: User,
    name: str,
    content: bytes,
    claimed_type: str = "application/octet-stream",
    alt_text: str = "",
) -> httpx.Response:
    async with signed_in(app, user) as client:
        return await client.post(
            "/admin/media",
            files={"file": (name, content, claimed_type)},
            data={"alt_text": alt_text},
        )


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def stored_media(app: Litestar) -> list[Media]:
    async with app.state.sessionmaker() as session:
        return list((await session.scalars(select(Media))).all())


async def set_upload_limit(app: Litestar, limit: int) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await write_setting(session, "upload_max_bytes", limit)


@pytest.mark.parametrize(
    ("name", "content", "content_type", "size"),
    [
        ("photo.png", image_bytes("PNG", (40, 30)), "image/png", (40, 30)),
        ("holiday.jpeg", image_bytes("JPEG", (64, 48)), "image/jpeg", (64, 48)),
        ("anim.gif", image_bytes("GIF", (8, 9)), "image/gif", (8, 9)),
        ("pic.webp", image_bytes("WEBP", (12, 10)), "image/webp", (12, 10)),
        ("Annual report.pdf", PDF_BYTES, "application/pdf", None),
    ],
)
async def test_an_upload_is_stored_and_served_with_its_type_nosniff_and_a_long_cache(
    app: Litestar,
    accounts: dict[str, User],
    media_dir: Path,
    name: str,
    content: bytes,
    content_type: str,
    size: tuple[int, int] | None,
) -> None:
    response = await api_upload(app, accounts["editor"], name, content, alt_text="A picture")

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["content_type"] == content_type
    assert body["size"] == len(content)
    assert (body["width"], body["height"]) == (size or (None, None))
    stored_name = body["url"].removeprefix("/media/")
    assert STORED.fullmatch(stored_name)
    assert files_in(media_dir) == [stored_name]
    assert (media_dir / stored_name).read_bytes() == content
    if size:
        assert body["markdown"] == f"![A picture](/media/{stored_name})"
    else:
        assert body["markdown"] == f"[{name}](/media/{stored_name})"

    async with client_for(app) as client:  # anyone may fetch a stored file
        served = await client.get(body["url"])
    assert served.status_code == 200
    assert served.content == content
    assert served.headers["content-type"] == content_type
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.headers["cache-control"] == LONG_CACHE
    if content_type == "application/pdf":  # a document that may run script: saved, not shown
        assert served.headers["content-disposition"] == f'attachment; filename="{name}"'
    else:
        assert served.headers["content-disposition"] == f'inline; filename="{name}"'
    assert served.headers["content-security-policy"] == MEDIA_CSP

    async with app.state.sessionmaker() as session:
        [entry] = await session.scalars(
            select(AuditEntry).where(AuditEntry.action == "media.uploaded")
        )
    assert entry.resource_id == body["id"] and entry.actor == "editor"


async def test_an_editor_uploads_on_the_page_and_the_library_shows_the_markdown_reference(
    app: Litestar, accounts: dict[str, User], media_dir: Path
) -> None:
    png = image_bytes("PNG", (20, 10))
    async with signed_in(app, accounts["editor"]) as client:
        uploaded = await client.post(
            "/admin/media",
            files={"file": ("logo.png", png, "image/png")},
            data={"alt_text": "The [Keel] logo"},
        )
        assert uploaded.status_code == 303
        library = await client.get(uploaded.headers["location"])

    [media] = await stored_media(app)
    assert (media.width, media.height, media.alt_text) == (20, 10, "The [Keel] logo")
    assert media.uploaded_by_id == accounts["editor"].id
    assert library.status_code == 200
    assert "The file was uploaded." in library.text
    reference = f"![The \\[Keel\\] logo](/media/{media.stored_name})"
    assert f'value="{reference}"' in library.text
    assert f'src="/media/{media.stored_name}"' in library.text
    assert "logo.png" in library.text and "20\N{MULTIPLICATION SIGN}10" in library.text


async def test_a_viewer_sees_the_library_and_searches_it_but_gets_no_upload_form(
    app: Litestar, accounts: dict[str, User]
) -> None:
    for name in ("cat.png", "dog.png"):
        await api_upload(app, accounts["editor"], name, image_bytes("PNG"))
    await api_upload(app, accounts["editor"], "menu.pdf", PDF_BYTES)

    async with signed_in(app, accounts["viewer"]) as client:
        everything = await client.get("/admin/media")
        cats = await client.get("/admin/media?q=CAT")
        pdfs = await client.get("/admin/media?kind=pdf")
    async with client_for(app) as client:
        as_viewer = await bearer(app, accounts["viewer"])
        listed = await client.get("/api/v1/media?q=dog", headers=as_viewer)
        picked = await client.get("/api/v1/media?q=dog&fields=original_name", headers=as_viewer)

    assert everything.status_code == 200
    assert 'enctype="multipart/form-data"' not in everything.text
    assert all(name in everything.text for name in ("cat.png", "dog.png", "menu.pdf"))
    assert "cat.png" in cats.text and "dog.png" not in cats.text
    assert "menu.pdf" in pdfs.text and "cat.png" not in pdfs.text
    assert listed.status_code == 200
    assert [item["original_name"] for item in listed.json()["items"]] == ["dog.png"]
    assert listed.json()["total"] == 1
    assert picked.json()["items"] == [{"original_name": "dog.png"}]


REFUSED = [
    ("photo.png", EXECUTABLE, "image/png", "Only PNG, JPEG"),  # a renamed executable
    ("x.pdf", HTML, "application/pdf", "Only PNG, JPEG"),  # HTML named .pdf
    ("drawing.svg", SVG, "image/svg+xml", "Only PNG, JPEG"),
    ("broken.png", image_bytes("PNG")[:40], "image/png", "damaged"),  # a truncated PNG
    ("empty.png", b"", "image/png", "empty"),
]


async def test_a_file_that_is_not_an_accepted_image_or_pdf_is_refused_and_leaves_nothing(
    app: Litestar, accounts: dict[str, User], settings: Settings, media_dir: Path
) -> None:
    """Every refused file, through the API and the page, in one app (its cost per test)."""
    for via, upload in (("api", api_upload), ("page", page_upload)):
        for name, content, claimed_type, message in REFUSED:
            response = await upload(app, accounts["editor"], name, content, claimed_type)

            assert response.status_code == 400, (via, name, response.text)
            if via == "api":
                assert message in response.json()["detail"], name
            else:
                assert message in response.text, name
                assert 'id="e-file"' in response.text, name
            assert files_in(media_dir) == [], (via, name)
            assert await count_rows(settings, "media") == 0, (via, name)
            assert await count_rows(settings, "audit_log") == 0, (via, name)


@pytest.mark.parametrize("via", ["api", "page"])
async def test_a_file_over_the_upload_limit_is_refused_naming_the_limit(
    app: Litestar, accounts: dict[str, User], settings: Settings, media_dir: Path, via: str
) -> None:
    await set_upload_limit(app, 2048)
    big = image_bytes("PNG", (300, 300), mode="RGB")  # noise-free but still > 2 KiB
    big = big if len(big) > 2048 else big + b"\x00" * 4096
    upload = api_upload if via == "api" else page_upload

    response = await upload(app, accounts["editor"], "big.png", big, "image/png")
    small = await upload(app, accounts["editor"], "small.png", image_bytes("PNG", (4, 4)))

    assert response.status_code == 400
    assert "upload limit of 2 KiB" in response.text
    assert small.status_code in (201, 303)
    assert len(files_in(media_dir)) == 1
    assert await count_rows(settings, "media") == 1


async def test_an_image_over_forty_megapixels_is_refused(
    app: Litestar, accounts: dict[str, User], settings: Settings, media_dir: Path
) -> None:
    huge = image_bytes("PNG", (8000, 5001), mode="1")

    response = await api_upload(app, accounts["editor"], "huge.png", huge, "image/png")

    assert response.status_code == 400
    assert "40 megapixels" in response.json()["detail"]
    assert files_in(media_dir) == []
    assert await count_rows(settings, "media") == 0


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("../../evil.png", "evil.png"),
        ("C:\\x\\y.png", "y.png"),
        ("/etc/passwd.png", "passwd.png"),
        ("..", "upload"),
        ("a" * 300 + ".png", "a" * 251 + ".png"),
    ],
)
async def test_a_path_in_the_file_name_is_dropped_and_nothing_is_written_outside(
    app: Litestar,
    accounts: dict[str, User],
    tmp_path: Path,
    media_dir: Path,
    given: str,
    shown: str,
) -> None:
    response = await api_upload(app, accounts["editor"], given, image_bytes("PNG"), "image/png")

    assert response.status_code == 201, response.text
    assert response.json()["original_name"] == shown
    [media] = await stored_media(app)
    assert media.original_name == shown
    assert files_in(media_dir) == [media.stored_name]
    assert files_in(tmp_path) == ["media"]


def test_display_names_keep_only_the_last_part_without_control_characters() -> None:
    assert display_name("dir/sub\\report\r\n.pdf") == "report.pdf"
    assert display_name("  ") == "upload"
    assert display_name(None) == "upload"
    assert len(display_name("é" * 400)) == 255


@pytest.mark.parametrize("via", ["api", "page"])
async def test_viewers_cannot_upload(
    app: Litestar, accounts: dict[str, User], settings: Settings, media_dir: Path, via: str
) -> None:
    upload = api_upload if via == "api" else page_upload

    response = await upload(app, accounts["viewer"], "photo.png", image_bytes("PNG"))

    assert response.status_code == 403
    assert files_in(media_dir) == []
    assert await count_rows(settings, "media") == 0


async def test_deleting_through_the_api_removes_the_file_and_the_row(
    app: Litestar, accounts: dict[str, User], settings: Settings, media_dir: Path
) -> None:
    created = (await api_upload(app, accounts["editor"], "a.png", image_bytes("PNG"))).json()
    async with client_for(app) as client:
        refused = await client.delete(
            f"/api/v1/media/{created['id']}", headers=await bearer(app, accounts["viewer"])
        )
        deleted = await client.delete(
            f"/api/v1/media/{created['id']}", headers=await bearer(app, accounts["editor"])
        )
        again = await client.delete(
            f"/api/v1/media/{created['id']}", headers=await bearer(app, accounts["editor"])
        )
        served = await client.get(created["url"])

    assert refused.status_code == 403
    assert deleted.status_code == 204
    assert again.status_code == 404
    assert served.status_code == 404
    assert files_in(media_dir) == []
    assert await count_rows(settings, "media") == 0


async def test_deleting_on_the_page_asks_first_then_removes_the_file_and_the_row(
    app: Litestar, accounts: dict[str, User], settings: Settings, media_dir: Path
) -> None:
    created = (await api_upload(app, accounts["editor"], "menu.pdf", PDF_BYTES)).json()
    async with signed_in(app, accounts["editor"]) as client:
        confirm = await client.get(f"/admin/media/{created['id']}/delete")
        assert files_in(media_dir) != []
        deleted = await client.post(f"/admin/media/{created['id']}/delete")
        library = await client.get(deleted.headers["location"])

    assert confirm.status_code == 200 and "Delete “menu.pdf”?" in confirm.text
    assert deleted.status_code == 303
    assert "The file was deleted." in library.text
    assert files_in(media_dir) == []
    assert await count_rows(settings, "media") == 0
    async with app.state.sessionmaker() as session:
        actions = list(await session.scalars(select(AuditEntry.action)))
    assert sorted(actions) == ["media.deleted", "media.uploaded"]


async def test_a_file_stored_in_a_transaction_that_rolls_back_is_removed(
    app: Litestar, accounts: dict[str, User], media_dir: Path
) -> None:
    async with app.state.sessionmaker() as session:
        await store_upload(
            session, Actor.system(), media_dir, 1024 * 1024, "a.png", image_bytes("PNG")
        )
        assert len(files_in(media_dir)) == 1
        await session.rollback()

    assert files_in(media_dir) == []
    assert await stored_media(app) == []


NOT_STORED = [
    "/media/made-up",
    "/media/..%2F..%2Fetc%2Fpasswd",
    "/media/%2e%2e%2fkeel.db",
    "/media/" + "0" * 32 + ".png",
    "/media/" + "A" * 32 + ".png",
    "/media/" + "0" * 32 + ".svg",
    "/media/.upload-x.part",
]


async def test_a_name_that_is_not_a_stored_file_is_a_404(
    app: Litestar, client: httpx.AsyncClient
) -> None:
    for path in NOT_STORED:  # one app for all: building it is what a test costs
        response = await client.get(path)

        assert response.status_code == 404, path


async def test_a_stored_name_in_other_case_or_with_a_path_is_a_404(
    app: Litestar, accounts: dict[str, User], client: httpx.AsyncClient
) -> None:
    created = (await api_upload(app, accounts["editor"], "a.png", image_bytes("PNG"))).json()
    name = created["url"].removeprefix("/media/")
    responses: list[Any] = [
        await client.get(f"/media/{name.upper()}"),
        await client.get(f"/media/..%2Fmedia%2F{name}"),
    ]

    assert [r.status_code for r in responses] == [404, 404]
    assert (await client.get(created["url"])).status_code == 200


async def test_a_browser_form_with_the_csrf_field_uploads(
    app: Litestar, accounts: dict[str, User], media_dir: Path
) -> None:
    async with signed_in(app, accounts["editor"]) as client:
        token = client.headers.pop("X-CSRF-Token")
        without = await client.post(
            "/admin/media", files={"file": ("a.png", image_bytes("PNG"), "image/png")}
        )
        uploaded = await client.post(
            "/admin/media",
            files={"file": ("a.png", image_bytes("PNG"), "image/png")},
            data={"_csrf_token": token, "alt_text": "A"},
        )

    assert without.status_code == 403
    assert uploaded.status_code == 303
    [media] = await stored_media(app)
    assert files_in(media_dir) == [media.stored_name]


async def test_a_file_above_the_frameworks_default_body_limit_uploads_within_the_setting(
    app: Litestar, accounts: dict[str, User], media_dir: Path
) -> None:
    await set_upload_limit(app, 12 * 1024 * 1024)
    pdf = PDF_BYTES + b"%" * (11 * 1024 * 1024)

    response = await api_upload(app, accounts["editor"], "big.pdf", pdf, "application/pdf")

    assert response.status_code == 201, response.text
    assert response.json()["size"] == len(pdf)
    assert (media_dir / response.json()["url"].removeprefix("/media/")).stat().st_size == len(pdf)


def test_media_dir_defaults_under_var_dir_and_a_relative_one_is_under_the_checkout() -> None:
    nowhere = Path("/nonexistent")
    default = Settings.from_env({"VAR_DIR": "/srv/keel"}, env_file=nowhere)
    relative = Settings.from_env({"MEDIA_DIR": "uploads"}, env_file=nowhere)

    assert default.app.media_dir == Path("/srv/keel/media")
    assert relative.app.media_dir == ROOT / "uploads"


async def test_a_pdf_that_runs_script_is_downloaded_in_a_sandbox_not_shown_on_the_site(
    app: Litestar, accounts: dict[str, User], client: httpx.AsyncClient
) -> None:
    """A PDF is accepted by its bytes, whatever it holds; shown inline, its JavaScript
    would run on the site's origin in a viewer. It is an attachment in a sandbox."""
    response = await api_upload(
        app, accounts["editor"], "Quarterly report.pdf", PDF_WITH_SCRIPT, "application/pdf"
    )
    assert response.status_code == 201, response.text
    served = await client.get(response.json()["url"])
    assert served.status_code == 200 and served.content == PDF_WITH_SCRIPT
    assert served.headers["content-type"] == "application/pdf"
    assert served.headers["content-disposition"] == ('attachment; filename="Quarterly report.pdf"')
    csp = served.headers["content-security-policy"]
    assert "sandbox" in csp.split("; ") and "default-src 'none'" in csp
    assert "script-src" not in csp and "unsafe" not in csp
    assert served.headers["x-content-type-options"] == "nosniff"
    # A link to it in a boosted page: htmx would fetch it and swap the bytes into the page,
    # so the browser is told to load it itself (and saves it).
    boosted = await client.get(
        response.json()["url"], headers={"HX-Request": "true", "HX-Boosted": "true"}
    )
    assert boosted.status_code == 200 and boosted.content == b""
    assert boosted.headers["hx-redirect"] == response.json()["url"]
    assert "HX-Request" in served.headers["vary"] and "HX-Request" in boosted.headers["vary"]
    async with signed_in(app, accounts["viewer"]) as signed:  # the same for a signed-in person
        again = await signed.get(response.json()["url"])
    assert again.headers["content-disposition"].startswith("attachment;")
    assert again.headers["content-security-policy"] == csp


async def test_a_non_ascii_file_name_keeps_its_exact_name_in_the_download(
    app: Litestar, accounts: dict[str, User], client: httpx.AsyncClient
) -> None:
    response = await api_upload(app, accounts["editor"], "Прогноз «2025».pdf", PDF_BYTES)
    served = await client.get(response.json()["url"])
    assert served.headers["content-disposition"] == (
        'attachment; filename="_______ _2025_.pdf"; '
        "filename*=UTF-8''%D0%9F%D1%80%D0%BE%D0%B3%D0%BD%D0%BE%D0%B7%20%C2%AB2025%C2%BB.pdf"
    )


async def test_an_unusable_media_dir_is_a_500_with_an_error_id_not_an_outage(
    settings: Settings, accounts: dict[str, User], tmp_path: Path
) -> None:
    """A file that cannot be written is no reason to tell people the database is away."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    app = create_app(with_app_settings(settings, media_dir=blocker / "media"))
    try:
        api = await api_upload(app, accounts["editor"], "a.png", image_bytes("PNG"), "image/png")
        page = await page_upload(app, accounts["editor"], "a.png", image_bytes("PNG"), "image/png")
    finally:
        await app.state.reads.close()
        await app.state.engine.dispose()
        await app.state.store.close()
    assert api.status_code == 500 and "retry-after" not in api.headers
    body = api.json()
    assert body["detail"].startswith("Something went wrong on our side") and body["error_id"]
    assert page.status_code == 500 and "retry-after" not in page.headers
    assert "Error id:" in page.text and "not answering" not in page.text
    assert await stored_media(app) == []


# The editor's media picker: /admin/media/picker ------------------------------------------

HTMX = {"HX-Request": "true"}
PICKS = re.compile(r'data-insert-markdown="([^"]*)"')


def picks(html: str) -> list[str]:
    """The Markdown each item of the picker inserts, in order (attribute-unescaped)."""
    return [value.replace("&#34;", '"').replace("&amp;", "&") for value in PICKS.findall(html)]


async def test_the_picker_is_guarded_like_the_media_page(
    app: Litestar, accounts: dict[str, User], settings: Settings, media_dir: Path
) -> None:
    async with client_for(app) as anonymous:
        anonymous_get = await anonymous.get("/admin/media/picker")
        anonymous_htmx = await anonymous.get("/admin/media/picker", headers=HTMX)
    async with signed_in(app, accounts["viewer"]) as viewer:
        viewer_get = await viewer.get("/admin/media/picker", headers=HTMX)
        viewer_post = await viewer.post(
            "/admin/media/picker",
            files={"file": ("photo.png", image_bytes("PNG"), "image/png")},
            headers=HTMX,
        )
    async with signed_in(app, accounts["editor"]) as editor:
        editor_get = await editor.get("/admin/media/picker", headers=HTMX)

    assert anonymous_get.status_code == 303
    assert anonymous_get.headers["location"].startswith("/login")
    assert anonymous_htmx.headers["hx-redirect"].startswith("/login")
    assert "No files yet" not in anonymous_htmx.text
    assert viewer_get.status_code == 200
    assert 'enctype="multipart/form-data"' not in viewer_get.text  # viewers read, not upload
    assert viewer_post.status_code == 403
    assert files_in(media_dir) == [] and await count_rows(settings, "media") == 0
    assert editor_get.status_code == 200
    assert 'action="/admin/media/picker" enctype="multipart/form-data"' in editor_get.text


async def test_the_picker_is_a_fragment_for_htmx_and_a_page_without(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["editor"]) as client:
        fragment = await client.get("/admin/media/picker", headers=HTMX)
        page = await client.get("/admin/media/picker")

    assert "<html" not in fragment.text and 'class="admin-nav"' not in fragment.text
    assert 'id="media-picker-results"' in fragment.text
    assert "HX-Request" in fragment.headers["vary"]
    assert "<html" in page.text and 'id="media-picker-results"' in page.text
    assert 'href="/admin/media"' in page.text  # the library, for browsers without htmx


async def test_the_picker_says_what_to_do_on_an_empty_library(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["editor"]) as editor:
        as_editor = await editor.get("/admin/media/picker", headers=HTMX)
    async with signed_in(app, accounts["viewer"]) as viewer:
        as_viewer = await viewer.get("/admin/media/picker", headers=HTMX)

    assert "No files yet. Upload an image or a PDF below." in as_editor.text
    assert "No files yet." in as_viewer.text and "Upload an image" not in as_viewer.text
    assert picks(as_editor.text) == []


async def test_the_picker_offers_each_files_markdown_image_or_link(
    app: Litestar, accounts: dict[str, User]
) -> None:
    await api_upload(app, accounts["editor"], "menu.pdf", PDF_BYTES)
    await api_upload(
        app,
        accounts["editor"],
        "logo.png",
        image_bytes("PNG", (20, 10)),
        alt_text='The [Keel] "logo"',
    )
    await api_upload(app, accounts["editor"], "bare.png", image_bytes("PNG"))

    async with signed_in(app, accounts["editor"]) as client:
        response = await client.get("/admin/media/picker", headers=HTMX)

    bare, logo, pdf = await _by_name(app, "bare.png", "logo.png", "menu.pdf")
    # Newest first: each item inserts exactly what the media page shows to copy.
    assert picks(response.text) == [
        f"![](/media/{bare.stored_name})",
        f'![The \\[Keel\\] "logo"](/media/{logo.stored_name})',
        f"[menu.pdf](/media/{pdf.stored_name})",
    ]
    # Images as thumbnails with their alt text; the missing one is pointed out.
    assert f'src="/media/{logo.stored_name}" alt="The [Keel] &#34;logo&#34;"' in response.text
    assert 'width="20" height="10"' in response.text
    assert "No alt text: describe the image in the brackets." in response.text
    assert "inserted as a link" in response.text


async def _by_name(app: Litestar, *names: str) -> list[Media]:
    by_name = {media.original_name: media for media in await stored_media(app)}
    return [by_name[name] for name in names]


async def test_the_picker_searches_and_pages_without_leaving_the_editor(
    app: Litestar, accounts: dict[str, User]
) -> None:
    for number in range(13):
        await api_upload(app, accounts["editor"], f"photo-{number:02d}.png", image_bytes("PNG"))
    await api_upload(app, accounts["editor"], "menu.pdf", PDF_BYTES)

    async with signed_in(app, accounts["viewer"]) as client:
        first = await client.get("/admin/media/picker", headers=HTMX)
        second = await client.get("/admin/media/picker?page=2", headers=HTMX)
        beyond = await client.get("/admin/media/picker?page=9", headers=HTMX)
        found = await client.get("/admin/media/picker?q=PHOTO-07", headers=HTMX)
        pdfs = await client.get("/admin/media/picker?kind=pdf", headers=HTMX)
        nothing = await client.get("/admin/media/picker?q=holiday", headers=HTMX)
        bad_kind = await client.get("/admin/media/picker?kind=video", headers=HTMX)

    assert len(picks(first.text)) == 12 and len(picks(second.text)) == 2
    assert set(picks(first.text)).isdisjoint(picks(second.text))
    assert "Page 1 of 2 · 14 in all" in first.text
    # The pager stays in the picker: its links load the picker's results, not a page.
    assert 'href="/admin/media/picker?page=2" hx-get="/admin/media/picker?page=2"' in first.text
    assert 'hx-select="#media-picker-results"' in first.text
    assert "hx-push-url" not in first.text
    assert "There is no page 9." in beyond.text
    assert [name.split("(")[0] for name in picks(found.text)] == ["![]"]
    assert "photo-07.png" in found.text and "photo-08.png" not in found.text
    assert [p.split("]")[0] for p in picks(pdfs.text)] == ["[menu.pdf"]
    assert picks(nothing.text) == []
    assert "No files match this search." in nothing.text
    assert bad_kind.status_code == 200 and len(picks(bad_kind.text)) == 12


async def test_an_upload_from_the_picker_comes_back_first_in_the_picker(
    app: Litestar, accounts: dict[str, User], settings: Settings, media_dir: Path
) -> None:
    await api_upload(app, accounts["editor"], "older.png", image_bytes("PNG"))
    async with signed_in(app, accounts["editor"]) as client:
        uploaded = await client.post(
            "/admin/media/picker",
            files={"file": ("harbour.png", image_bytes("PNG", (30, 20)), "image/png")},
            data={"alt_text": "The harbour at dusk"},
            headers=HTMX,
        )
        after = await client.get(uploaded.headers["location"], headers=HTMX)
        refused = await client.post(
            "/admin/media/picker",
            files={"file": ("evil.png", EXECUTABLE, "image/png")},
            data={"alt_text": "kept"},
            headers=HTMX,
        )

    assert uploaded.status_code == 303
    assert uploaded.headers["location"] == "/admin/media/picker?notice=uploaded"
    [harbour] = await _by_name(app, "harbour.png")
    assert "The file was uploaded: choose it below to insert it." in after.text
    assert picks(after.text)[0] == f"![The harbour at dusk](/media/{harbour.stored_name})"
    assert "<html" not in after.text
    # A refused file: the message beside the picker's file field, the alt text kept,
    # nothing stored.
    assert refused.status_code == 400
    assert 'id="picker-e-file"' in refused.text and "Only PNG, JPEG" in refused.text
    assert 'value="kept"' in refused.text and "<html" not in refused.text
    assert await count_rows(settings, "media") == 2 and len(files_in(media_dir)) == 2
    async with app.state.sessionmaker() as session:
        actions = list(await session.scalars(select(AuditEntry.action)))
    assert actions.count("media.uploaded") == 2


async def test_an_upload_from_the_picker_needs_the_csrf_token(
    app: Litestar, accounts: dict[str, User], media_dir: Path
) -> None:
    async with signed_in(app, accounts["editor"]) as client:
        client.headers.pop("X-CSRF-Token")
        response = await client.post(
            "/admin/media/picker",
            files={"file": ("a.png", image_bytes("PNG"), "image/png")},
            headers=HTMX,
        )
    assert response.status_code == 403
    assert files_in(media_dir) == []


async def test_uploaded_images_in_a_post_keep_their_room_and_later_ones_load_lazily(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """Width and height come from the upload (the page does not jump as images load); the
    first image loads at once (likely on screen), the others when scrolled to."""
    editor = accounts["editor"]
    wide = (await api_upload(app, editor, "wide.png", image_bytes("PNG", (64, 24)))).json()
    tall = (await api_upload(app, editor, "tall.png", image_bytes("PNG", (12, 48)))).json()
    body = (
        f"![Wide]({wide['url']})\n\nText.\n\n![Tall]({tall['url']})\n\n"
        "![Elsewhere](https://images.example/x.png)"
    )
    async with app.state.sessionmaker() as session, session.begin():
        actor = Actor(editor.id, editor.username)
        entry = await save_entry(session, actor, EntryInput(title="Pictures", body_markdown=body))
        await publish_entry(session, actor, entry)
    async with client_for(app) as client:
        page = await client.get(f"/blog/{entry.slug}")
    images = re.findall(r"<img [^>]*>", page.text.split("<article", 1)[1])
    assert images[0] == f'<img src="{wide["url"]}" alt="Wide" width="64" height="24">'
    assert images[1] == (
        f'<img src="{tall["url"]}" alt="Tall" width="12" height="48" loading="lazy">'
    )
    assert images[2] == '<img src="https://images.example/x.png" alt="Elsewhere" loading="lazy">'
