"""Registries: what Keel and its plugins add at run time (job types, schedules, settings,
metrics, admin navigation, template folders, route groups), each item under its owner.

An owner is `"keel"` or a plugin's name. `add(owner, item)` refuses a key another owner
holds; the same owner adding a key again replaces its own item (a plugin reloaded).
`remove(owner)` drops everything that owner added. Every change bumps `generation`, so
whatever was derived from a registry (a router, compiled templates, memoised URLs) can
tell it is out of date by comparing one number. Items iterate in the order they were
first added; a replaced item keeps its place.

Changes are plain synchronous dict operations: on the event loop no request sees half a
change. A registry is per process: a plugin loaded in one worker process is not in another
until that process adds it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")

KEEL = "keel"
"""The owner of everything Keel itself adds."""


class RegistryClash(ValueError):
    """A key is already held by another owner."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    owner: str
    item: T


class Registry(Generic[K, T]):
    """Items keyed by `key(item)`, each with its owner; see the module docstring."""

    def __init__(self, kind: str, key: Callable[[T], K]) -> None:
        self.kind = kind
        """What the items are, for error messages: "job type", "setting", ..."""
        self._key = key
        self._entries: dict[K, Entry[T]] = {}
        self._listeners: list[Callable[[], None]] = []
        self.generation = 0
        """Bumped by every add and remove."""

    def add(self, owner: str, item: T) -> T:
        """Register `item` for `owner`; RegistryClash when another owner holds its key."""
        key = self._key(item)
        held = self._entries.get(key)
        if held is not None and held.owner != owner:
            raise RegistryClash(f"{self.kind} {key!r} is already registered by {held.owner!r}")
        self._entries[key] = Entry(owner, item)
        try:
            self._changed()
        except BaseException:  # a listener could not take it (a route group's paths): undone
            if held is None:
                del self._entries[key]
            else:
                self._entries[key] = held
            self._changed()
            raise
        return item

    def remove(self, owner: str) -> list[T]:
        """Drop every item `owner` added; returns them."""
        gone = [key for key, entry in self._entries.items() if entry.owner == owner]
        removed = [self._entries.pop(key).item for key in gone]
        if removed:
            self._changed()
        return removed

    def get(self, key: K) -> T | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.item

    def __getitem__(self, key: K) -> T:
        return self._entries[key].item

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter([entry.item for entry in self._entries.values()])

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[K, T]]:
        return [(key, entry.item) for key, entry in self._entries.items()]

    def owner_of(self, key: K) -> str | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.owner

    def owned_by(self, owner: str) -> list[T]:
        return [entry.item for entry in self._entries.values() if entry.owner == owner]

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` after every change (a router to rebuild, say); returns a function
        that stops the calls. A listener that raises on an add refuses the item: the add is
        undone (the listeners are called again) and the error raised to the caller."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _changed(self) -> None:
        self.generation += 1
        for listener in list(self._listeners):
            listener()
