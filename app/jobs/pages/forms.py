"""The admin enqueue form's fields, read off each job type's payload schema.

A type declared with a msgspec Struct (or dataclass) payload gets one form field per Struct field: a
choice list for a `Literal`, a number box (with its bounds) for an `int`, a checkbox for a
`bool`, a text box or, for long text, a text area. A type without a schema, or with a field
no form control fits, keeps the JSON payload box, read as a JSON body is (`parse_json`: the
same decoder and refusals as the API's). Either way the payload is then checked by the type
itself (`JobType.validate`), exactly as the API checks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from msgspec import inspect

from app.core.boundary import UnreadableJson, UnstorableInput, parse_json
from app.jobs.services.registry import JobInputError, JobType

FIELD_PREFIX = "p."
"""Form names of payload fields: `p.<field>`, apart from the form's own fields."""
TEXTAREA_FROM = 1000
"""Text fields that may be longer than this are text areas."""
JSON_FIELD = "payload"
_AT_FIELD = re.compile(r"at `\$\.(\w+)`")


@dataclass(frozen=True)
class PayloadField:
    name: str
    control: str
    """`select`, `number`, `checkbox`, `text` or `textarea`."""
    required: bool
    default: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    @property
    def form_name(self) -> str:
        return FIELD_PREFIX + self.name

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()


@cache
def payload_fields(kind: JobType) -> tuple[PayloadField, ...] | None:
    """The form fields of `kind`'s payload; None when only the JSON box can express it.
    Read off the schema once per type (a form page asks for them several times)."""
    if kind.payload is None:
        return None
    info = inspect.type_info(kind.payload)
    if not isinstance(info, inspect.StructType | inspect.DataclassType):
        return None
    fields = []
    for field in info.fields:
        made = _field(field)
        if made is None:
            return None
        fields.append(made)
    return tuple(fields)


def _field(field: inspect.Field) -> PayloadField | None:
    kind, optional = field.type, False
    if isinstance(kind, inspect.UnionType):
        others = [t for t in kind.types if not isinstance(t, inspect.NoneType)]
        if len(others) != 1:
            return None
        kind, optional = others[0], True
    default = "" if field.default in (msgspec.NODEFAULT, None) else str(field.default)
    name, required = field.name, field.required and not optional
    if isinstance(kind, inspect.LiteralType):
        choices = tuple(value for value in kind.values if isinstance(value, str))
        if len(choices) != len(kind.values):
            return None
        return PayloadField(
            name=name, control="select", required=required, default=default, choices=choices
        )
    if isinstance(kind, inspect.BoolType):
        checked = "on" if field.default else ""
        return PayloadField(name=name, control="checkbox", required=required, default=checked)
    if isinstance(kind, inspect.IntType):
        minimum = kind.ge if kind.ge is not None else (kind.gt + 1 if kind.gt is not None else None)
        maximum = kind.le if kind.le is not None else (kind.lt - 1 if kind.lt is not None else None)
        return PayloadField(
            name=name,
            control="number",
            required=required,
            default=default,
            minimum=minimum,
            maximum=maximum,
        )
    if isinstance(kind, inspect.StrType | inspect.UUIDType | inspect.FloatType):
        long = isinstance(kind, inspect.StrType) and (kind.max_length or 10**9) > TEXTAREA_FROM
        control = "textarea" if long else "text"
        return PayloadField(name=name, control=control, required=required, default=default)
    return None


def form_defaults(kind: JobType | None) -> dict[str, str]:
    """The values a fresh form shows for `kind`."""
    if kind is None:
        return {}
    fields = payload_fields(kind)
    if fields is None:
        return {JSON_FIELD: "{}"}
    return {field.form_name: field.default for field in fields}


def payload_from_form(kind: JobType, data: dict[str, str]) -> dict[str, Any]:
    """The payload the form describes, before the type checks it. Empty optional fields
    are left out (their defaults apply); a missing required one is an error beside it."""
    fields = payload_fields(kind)
    if fields is None or data.get(JSON_FIELD, "").strip():  # the JSON box, when filled in
        text = data.get(JSON_FIELD, "").strip() or "{}"
        try:
            return parse_json(text.encode("utf-8", "surrogatepass"))
        except (UnstorableInput, UnreadableJson) as exc:
            raise JobInputError(exc.message, JSON_FIELD) from None
    payload: dict[str, Any] = {}
    for field in fields:
        value = data.get(field.form_name, "")
        if field.control == "checkbox":
            payload[field.name] = value == "on"
        elif value.strip():
            payload[field.name] = value.strip() if field.control != "textarea" else value
        elif field.required:
            raise JobInputError(f"{field.label} is required.", field.form_name)
    return payload


def error_field(kind: JobType | None, error: JobInputError) -> str:
    """Where a payload error belongs on the form: beside the field its message names."""
    found = _AT_FIELD.search(error.message)
    if error.field == JSON_FIELD and found and kind is not None and payload_fields(kind):
        return FIELD_PREFIX + found.group(1)
    return error.field or "form"
