"""The guestbook's JSON API (/api/plugins/guestbook/): signing, approval, removal, the
checks on a name and a message, settings, pagination and the limit per address."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keel.testing import PluginSite, assert_problem

ENTRIES = "/api/plugins/guestbook/entries"
PER_HOUR = 5
"""The manifest's default `entries_per_hour`."""


async def test_a_new_entry_is_pending_until_an_editor_approves_it(
    site: PluginSite, guestbook: Any
) -> None:
    async with site.client() as visitor:
        answer = await visitor.post(ENTRIES, json={"name": "Ada", "message": "Hello from Ada"})
    assert answer.status_code == 201 and answer.json()["status"] == "pending"
    entry_id = answer.json()["id"]
    assert await guestbook.listed() == []
    async with site.client("editor", token=True) as editor:
        approved = await editor.post(f"{ENTRIES}/{entry_id}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "approved"
        assert (await editor.post(f"{ENTRIES}/{entry_id}/approve")).status_code == 200
        assert_problem(await editor.post(f"{ENTRIES}/99999/approve"), 404)
    async with site.client() as anyone:
        body = (await anyone.get(ENTRIES)).json()
    assert body["items"] == [
        {
            "id": entry_id,
            "name": "Ada",
            "message": "Hello from Ada",
            "status": "approved",
            "created_at": body["items"][0]["created_at"],
        }
    ]
    assert (body["total"], body["page"], body["per_page"]) == (1, 1, 20)


async def test_viewers_and_visitors_may_not_approve_or_delete(
    site: PluginSite, guestbook: Any
) -> None:
    async with site.client() as visitor:
        entry_id = await guestbook.sign(visitor, "Eve")
        assert_problem(await visitor.post(f"{ENTRIES}/{entry_id}/approve"), 401)
        assert_problem(await visitor.delete(f"{ENTRIES}/{entry_id}"), 401)
    async with site.client("viewer", token=True) as viewer:
        assert_problem(await viewer.post(f"{ENTRIES}/{entry_id}/approve"), 403)
        assert_problem(await viewer.delete(f"{ENTRIES}/{entry_id}"), 403)
    assert await guestbook.listed() == []
    assert await guestbook.pending_ids() == [entry_id]


async def test_an_editor_deletes_an_entry(site: PluginSite, guestbook: Any) -> None:
    async with site.client() as visitor:
        entry_id = await guestbook.sign(visitor, "Spammer")
    async with site.client("editor", token=True) as editor:
        assert (await editor.delete(f"{ENTRIES}/{entry_id}")).status_code == 204
        assert_problem(await editor.delete(f"{ENTRIES}/{entry_id}"), 404)
        assert_problem(await editor.post(f"{ENTRIES}/{entry_id}/approve"), 404)
    assert await guestbook.pending_ids() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "", "message": "Hi"}, "name"),
        ({"name": "   ", "message": "Hi"}, "name"),
        ({"message": "Hi"}, "name"),
        ({"name": 42, "message": "Hi"}, "name"),
        ({"name": "x" * 81, "message": "Hi"}, "name"),
        ({"name": "Ada", "message": ""}, "message"),
        ({"name": "Ada", "message": "\n\t "}, "message"),
        ({"name": "Ada", "message": "x" * 2001}, "message"),
    ],
)
async def test_a_blank_or_too_long_name_or_message_is_a_422_naming_the_field(
    site: PluginSite, guestbook: Any, body: dict[str, Any], field: str
) -> None:
    async with site.client() as visitor:
        refused = await visitor.post(ENTRIES, json=body)
    problem = assert_problem(refused, 422, field)
    assert [error["field"] for error in problem["errors"]] == [field]
    assert await guestbook.pending_ids() == []


async def test_both_fields_wrong_name_both(site: PluginSite) -> None:
    async with site.client() as visitor:
        refused = await visitor.post(ENTRIES, json={"name": "", "message": ""})
    problem = assert_problem(refused, 422)
    assert {error["field"] for error in problem["errors"]} == {"name", "message"}


async def test_control_characters_are_dropped_and_lines_kept(
    site: PluginSite, guestbook: Any
) -> None:
    async with site.client() as visitor:
        answer = await visitor.post(
            ENTRIES,
            json={"name": " Ada\nLovelace\u202e ", "message": "one\r\ntwo\x07\n\n\n\nthree\u200b"},
        )
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == "Ada Lovelace"
    assert answer.json()["message"] == "one\ntwo\n\nthree"
    table = site.module("guestbook.entries").entries_table(site.ctx)
    async with site.ctx.session() as session:  # kept as answered, in the plugin's own table
        rows = (await session.execute(table.select())).all()
    assert [(row.name, row.message, row.approved) for row in rows] == [
        ("Ada Lovelace", "one\ntwo\n\nthree", False)
    ]


async def test_without_approval_new_entries_are_listed_at_once(
    site: PluginSite, guestbook: Any
) -> None:
    assert (await site.configure(needs_approval=False))["needs_approval"] is False
    async with site.client() as visitor:
        answer = await visitor.post(ENTRIES, json={"name": "Grace", "message": "Hi!"})
    assert answer.status_code == 201 and answer.json()["status"] == "approved"
    assert await guestbook.listed() == ["Grace"]


async def test_the_list_is_paginated_newest_first(site: PluginSite) -> None:
    await site.configure(needs_approval=False)
    for number in range(3):
        async with site.client(client_ip=f"198.51.100.{number}") as visitor:
            await visitor.post(ENTRIES, json={"name": f"Visitor {number}", "message": "Hi"})
    async with site.client() as anyone:
        first = (await anyone.get(ENTRIES, params={"per_page": 2})).json()
        second = (await anyone.get(ENTRIES, params={"per_page": 2, "page": 2})).json()
        far = (await anyone.get(ENTRIES, params={"page": 2**63 - 1, "per_page": -5})).json()
        too_far = await anyone.get(ENTRIES, params={"page": 10**30})
    assert [item["name"] for item in first["items"]] == ["Visitor 2", "Visitor 1"]
    assert [item["name"] for item in second["items"]] == ["Visitor 0"]
    assert (first["total"], second["page"]) == (3, 2)
    assert far["items"] == [] and far["per_page"] == 1 and far["total"] == 3
    assert_problem(too_far, 400)  # past what a BIGINT holds, as Keel's own lists answer


async def test_one_address_signs_at_most_entries_per_hour_times(
    site: PluginSite, guestbook: Any
) -> None:
    async with site.client() as visitor:
        for number in range(PER_HOUR):
            await guestbook.sign(visitor, f"Visitor {number}")
        refused = await visitor.post(ENTRIES, json={"name": "Once more", "message": "Hi"})
        assert_problem(refused, 429)
        assert int(refused.headers["retry-after"]) > 0
    async with site.client(client_ip="198.51.100.9") as another:
        await guestbook.sign(another, "Someone else")
    assert len(await guestbook.pending_ids()) == PER_HOUR + 1


async def test_the_limit_is_the_entries_per_hour_setting(site: PluginSite, guestbook: Any) -> None:
    await site.configure(entries_per_hour=2)
    async with site.client() as visitor:
        await guestbook.sign(visitor, "One")
        await guestbook.sign(visitor, "Two")
        assert_problem(await visitor.post(ENTRIES, json={"name": "Three", "message": "Hi"}), 429)


async def test_the_count_starts_again_in_the_next_hour(site: PluginSite, guestbook: Any) -> None:
    with site.clock() as clock:
        async with site.client() as visitor:
            for number in range(PER_HOUR):
                await guestbook.sign(visitor, f"Visitor {number}")
            assert_problem(await visitor.post(ENTRIES, json={"name": "A", "message": "B"}), 429)
            clock.advance(timedelta(hours=1))
            await guestbook.sign(visitor, "An hour later")


async def test_an_api_token_signs_too(site: PluginSite, guestbook: Any) -> None:
    async with site.client("viewer", token=True) as viewer:
        await guestbook.sign(viewer, "Viewer")
    assert len(await guestbook.pending_ids()) == 1
