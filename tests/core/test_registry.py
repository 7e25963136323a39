"""The one registry every extension point uses: items under their owners, a generation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.core.registry import KEEL, Registry, RegistryClash


@dataclass(frozen=True)
class Item:
    name: str
    value: int = 0


def registry() -> Registry[str, Item]:
    return Registry("thing", key=lambda item: item.name)


def test_items_iterate_in_the_order_they_were_added_and_are_found_by_key() -> None:
    things = registry()
    things.add(KEEL, Item("b"))
    things.add("blog", Item("a"))
    things.add(KEEL, Item("c"))
    assert [item.name for item in things] == ["b", "a", "c"]
    assert things.items() == [("b", Item("b")), ("a", Item("a")), ("c", Item("c"))]
    assert things["a"] == Item("a") and things.get("a") == Item("a") and "a" in things
    assert things.get("z") is None and "z" not in things and len(things) == 3
    assert things.owner_of("a") == "blog" and things.owned_by(KEEL) == [Item("b"), Item("c")]


def test_a_key_held_by_another_owner_is_refused_and_the_holder_keeps_it() -> None:
    things = registry()
    things.add(KEEL, Item("title", 1))
    with pytest.raises(RegistryClash, match="thing 'title' is already registered by 'keel'"):
        things.add("blog", Item("title", 2))
    assert things["title"] == Item("title", 1) and things.owner_of("title") == KEEL


def test_the_same_owner_replaces_its_own_item_in_place() -> None:
    things = registry()
    things.add("blog", Item("a", 1))
    things.add(KEEL, Item("b"))
    things.add("blog", Item("a", 2))
    assert list(things) == [Item("a", 2), Item("b")]


def test_remove_drops_every_item_of_that_owner_only() -> None:
    things = registry()
    things.add(KEEL, Item("a"))
    things.add("blog", Item("b"))
    things.add("blog", Item("c"))
    assert things.remove("blog") == [Item("b"), Item("c")]
    assert list(things) == [Item("a")]
    assert things.remove("blog") == []
    things.add("shop", Item("b"))  # a key freed by its owner may be taken by another
    assert things.owner_of("b") == "shop"


def test_every_change_bumps_the_generation_and_tells_the_listeners() -> None:
    things = registry()
    heard: list[int] = []
    stop = things.on_change(lambda: heard.append(things.generation))
    start = things.generation
    things.add(KEEL, Item("a"))
    things.add(KEEL, Item("a", 1))
    things.remove("nobody")  # nothing changed
    things.remove(KEEL)
    assert things.generation == start + 3 and heard == [start + 1, start + 2, start + 3]
    things.add(KEEL, Item("x"))
    with pytest.raises(RegistryClash):
        things.add("blog", Item("x"))
    assert things.generation == start + 4  # a refused add changes nothing
    stop()
    things.remove(KEEL)
    assert heard[-1] == start + 4


def test_an_add_a_listener_refuses_is_undone() -> None:
    things = registry()
    things.add(KEEL, Item("a", 1))
    seen: list[list[Item]] = []

    def refuse_odd() -> None:
        seen.append(list(things))
        if any(item.value % 2 for item in things if item.name != "a"):
            raise RegistryClash("odd values are not taken")

    things.on_change(refuse_odd)
    with pytest.raises(RegistryClash, match="odd"):
        things.add("blog", Item("b", 3))
    assert list(things) == [Item("a", 1)] and seen[-1] == [Item("a", 1)]
    things.add("blog", Item("b", 2))
    with pytest.raises(RegistryClash):
        things.add("blog", Item("b", 5))
    assert list(things) == [Item("a", 1), Item("b", 2)]
