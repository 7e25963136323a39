"""Encoded API list answers this process keeps for callers who see every entry (editors,
admins), valid while the database's content generation stays the same.

The number comes from the database in each request (`content_generation`, one small read):
triggers set it anew in the same transaction as any change of entries, tags or entry tags
(migration 0013), so a list kept under it is what the list query would answer now, in
every process, right after any commit (read-your-writes holds across processes; nothing
waits for a message). A hit skips the list query, the rows, the encoding and, through the
answer's strong ETag, the compression (app/core/compression.py keeps compressed bodies
by ETag). Anonymous readers' lists are the page cache's (they change with the clock too).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from app import __version__
from app.core.metrics import Metric, Tally, counter_key, stored

KEPT = 256
"""Answers kept (query strings of the current generation); the least recently used goes."""
LIST_CACHE_REQUESTS = stored(
    Metric(
        "keel_list_cache_requests_total",
        "counter",
        "API content lists asked by callers who see every entry, by result: hit (the kept "
        "answer of the current content generation), miss (read and kept).",
        ("result",),
    )
)

_VERSION = __version__.encode()[:64]


@dataclass(frozen=True, slots=True)
class KeptList:
    body: bytes
    etag: str
    """Strong: the same generation, query and Keel version give the same bytes in every
    process."""


class ListCache:
    def __init__(self, figures: Tally | None = None, size: int = KEPT) -> None:
        self.figures = figures or Tally()
        self.size = size
        self.generation = -1
        """The generation of the kept answers: the one the latest miss read."""
        self.kept: OrderedDict[bytes, KeptList] = OrderedDict()
        self._hit = counter_key(LIST_CACHE_REQUESTS, ("hit",))
        self._miss = counter_key(LIST_CACHE_REQUESTS, ("miss",))

    def get(self, generation: int, query: bytes) -> KeptList | None:
        """The answer kept for `query` under `generation`, if any; another generation drops
        the kept answers (generations are random, not ordered: a request that read the one
        before a change, just as it committed, only costs a read more)."""
        pending = self.figures.pending
        if generation == self.generation:
            kept = self.kept.get(query)
            if kept is not None:
                self.kept.move_to_end(query)
                pending[self._hit] += 1
                return kept
        else:
            self.generation = generation
            self.kept.clear()
        pending[self._miss] += 1
        return None

    def keep(self, generation: int, query: bytes, body: bytes) -> KeptList:
        """`body`, the answer to `query` read after `generation` was, kept if that is
        still the generation of the kept answers (else it is only sent)."""
        digest = hashlib.blake2b(query, digest_size=8, key=_VERSION).hexdigest()
        kept = KeptList(body, f'"c{generation}-{digest}"')
        if generation == self.generation:
            self.kept[query] = kept
            while len(self.kept) > self.size:
                self.kept.popitem(last=False)
        return kept
