"""The OpenAPI document lists every error an operation can answer, as problem details."""

from __future__ import annotations

import uuid

import httpx
import msgspec
import pytest
from litestar import Litestar

from app.accounts.models import User
from app.core.openapi import Problem
from tests.conftest import bearer

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


async def _operations(client: httpx.AsyncClient) -> list[tuple[str, str, dict]]:
    document = (await client.get("/schema/openapi.json")).json()
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


async def test_every_operation_documents_its_errors_as_problem_details(
    client: httpx.AsyncClient,
) -> None:
    wrong = []
    for method, path, operation in await _operations(client):
        responses = operation["responses"]
        expected = {"400", "500", "503"}
        if path.startswith("/api/"):
            expected |= {"401", "429"}
        if operation.get("security"):
            expected |= {"401", "403"}
        if "{" in path:
            expected.add("404")
        if method != "GET":
            expected.add("409")
        missing = expected - responses.keys()
        not_problems = [
            s for s in responses if s >= "400" and responses[s].get("content") != PROBLEM
        ]
        if missing or not_problems:
            wrong.append(f"{method} {path}: missing {sorted(missing)}, not problems {not_problems}")
    assert wrong == []


async def test_operations_that_need_a_caller_name_the_credentials(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    assert set(document["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    operations = {(m, p): op for m, p, op in await _operations(client)}
    assert operations[("GET", "/api/v1/users")]["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in operations[("GET", "/api/v1/content")]  # anyone may read
    assert "410" in operations[("GET", "/api/v1/jobs/{job_id}/result")]["responses"]


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (("GET", f"/api/v1/content/{uuid.uuid4()}"), 404),
        (("GET", "/api/v1/content?page=many"), 400),
        (("POST", "/api/v1/content"), 401),
        (("GET", "/api/v1/users"), 401),
    ],
)
async def test_error_bodies_are_what_the_document_says(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User], request_line, status
) -> None:
    response = await client.request(*request_line)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = msgspec.json.decode(response.content, type=Problem, strict=True)
    assert problem.status == status and problem.instance == request_line[1].split("?")[0]


async def test_a_body_the_handler_can_do_without_is_not_required(
    client: httpx.AsyncClient, app: Litestar, accounts: dict[str, User]
) -> None:
    operations = {(m, p): op for m, p, op in await _operations(client)}
    optional = {
        key for key, op in operations.items() if not op.get("requestBody", {}).get("required", True)
    }
    assert optional == {
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/content/{entry_id}/publish"),
    }
    admin = accounts["admin"]
    response = await client.post("/api/v1/auth/logout", headers=await bearer(app, admin))
    assert response.status_code == 204  # no body at all, as documented


async def test_every_documented_answer_names_a_media_type(client: httpx.AsyncClient) -> None:
    """A file download was documented under the content type "" (Litestar's File)."""
    nameless = [
        f"{method} {path} {status}"
        for method, path, operation in await _operations(client)
        for status, answer in operation["responses"].items()
        for media_type in answer.get("content", {})
        if "/" not in media_type
    ]
    assert nameless == []
