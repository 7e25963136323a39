"""Whole numbers the database can hold, for every integer a request carries.

An integer past its column's type used to reach the database and answer 500 (a page of
4.6e17, a job id of 2^63, a nav order of 2^31). Request bodies (msgspec Structs) use the
field types, query and path parameters the parameter types (Litestar reads its own
`Parameter` there, not msgspec's `Meta`); either refuses a number out of range with a 400
that names the field, and the OpenAPI document states the range. Code that parses a
number by hand (a form, a CSV cell) checks it against the same bounds. Page numbers are
in app/core/pagination.py.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar.params import KwargDefinition, Parameter

INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def parameter_bounds(low: int, high: int, description: str | None = None) -> KwargDefinition:
    """Litestar's bounds for a query or path parameter; `schema_extra` keeps them exact in
    the OpenAPI document (Litestar writes them as floats, and 2^63-1 is not one)."""
    return Parameter(
        ge=low, le=high, description=description, schema_extra={"minimum": low, "maximum": high}
    )


Int32 = Annotated[int, msgspec.Meta(ge=INT32_MIN, le=INT32_MAX)]
"""A body field stored in an INTEGER column."""

RowId = Annotated[int, parameter_bounds(1, INT64_MAX)]
"""A BIGINT identity in a path (`/jobs/{job_id}`)."""
