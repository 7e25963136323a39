"""`?fields=`: the fields of each item a client wants (Directus and Strapi use the same name).

Lists answer summary representations and items their full one; `fields=id,title,body_html`
answers just the named fields instead, on lists and items alike, chosen from the item's full
schema. The names are checked before any work: an unknown one is a 400 that names it (field
`fields`). Each name is trimmed; empty names and repeats are dropped, so `fields=` or
`fields=,` asks for nothing in particular and gets the default representation.

An endpoint takes `fields: FieldNames = None`, parses it with `Fields.parse(fields, ItsOut)`
and answers `selected(...)` / `selected_each(...)`; app/core/openapi.py gives every operation
that takes `fields` the `Selectable` operation class, so the OpenAPI document allows the
cut-down shape beside the default one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
from litestar.openapi.spec import Operation, Schema
from litestar.params import Parameter

from app.core.errors import InvalidField

S = TypeVar("S", bound=msgspec.Struct)
FIELDS = "fields"
"""The parameter's name, as handlers take it."""
Selected = dict[str, Any]
"""An item cut down to the fields asked for."""

FIELDS_HELP = (
    "Comma-separated names of the fields to answer for each item (`id,title,body_html`), "
    "any field of the item's full representation, bodies included. Without it (or when it "
    "names nothing) a list answers summaries and an item its full representation; the "
    "envelope of a list (items, total, page, per_page) stays. Spaces around a name, empty "
    "names and repeats are ignored; an unknown name is a 400 that names it."
)
SELECTED_HELP = "With `fields`: only the fields named, each as in the full representation."
FieldNames = Annotated[str | None, Parameter(description=FIELDS_HELP)]
"""The `fields` query parameter, as a handler takes it."""


@dataclass(frozen=True, slots=True)
class Fields:
    names: tuple[str, ...]

    @classmethod
    def parse(cls, raw: str | None, schema: type[msgspec.Struct]) -> Fields | None:
        """The names in `raw`, in the order given, each once; None when it names none."""
        names = tuple(
            dict.fromkeys(name for piece in (raw or "").split(",") if (name := piece.strip()))
        )
        if not names:
            return None
        unknown = [name for name in names if name not in schema.__struct_fields__]
        if unknown:
            known = ", ".join(schema.__struct_fields__)
            raise InvalidField(f"No such field: {', '.join(unknown)} (there are {known}).", FIELDS)
        return cls(names)

    def within(self, schema: type[msgspec.Struct]) -> bool:
        """Whether `schema` (a summary, say) has every field asked for."""
        return all(name in schema.__struct_fields__ for name in self.names)

    def pick(self, item: msgspec.Struct) -> Selected:
        return {name: getattr(item, name) for name in self.names}


def selected(item: S, fields: Fields | None) -> S | Selected:
    """The item as it is when no fields were asked for, else only those."""
    return item if fields is None else fields.pick(item)


def selected_each(items: Sequence[S], fields: Fields | None) -> Sequence[S] | list[Selected]:
    """`selected` for every item of a list."""
    return items if fields is None else [fields.pick(item) for item in items]


@dataclass
class Selectable(Operation):
    """An operation whose answer `fields=` may cut down. Its handler declares
    `Default | Selected`, which Litestar writes as `oneOf`; a full item matches both, so
    the document says `anyOf` instead."""

    def __post_init__(self) -> None:
        for answer in (self.responses or {}).values():
            for media in (getattr(answer, "content", None) or {}).values():
                schema = media.schema
                if isinstance(schema, Schema) and schema.one_of:
                    schema.any_of, schema.one_of = schema.one_of, None
                    for choice in schema.any_of:
                        if isinstance(choice, Schema):
                            choice.description = SELECTED_HELP
