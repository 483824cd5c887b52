"""The admin API over real HTTP (``TASKGATE_ADMIN_TOKEN``): accounts, credits, limits and
keys; its absence without a token; its bearer check; every bad input refused with a
code and nothing written; and what it changes taking effect at once on ``/v1/tasks``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import (
    ACCOUNT_ID,
    API_KEY,
    KEY_ID,
    assert_error,
    get_usage,
    json_of,
    module_server,
    parse_time,
    send,
    send_raw,
    sql,
    submit,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, wait_until

pytestmark = pytest.mark.acceptance

TOKEN = f"admin-{uuid.uuid4().hex}"
UNKNOWN_ACCOUNT = "acct_01J00000000000000000000000"
UNKNOWN_KEY = "key_01J00000000000000000000000"
ACCOUNT_FIELDS = {
    "id",
    "object",
    "name",
    "concurrency_limit",
    "running",
    "balance",
    "reserved",
    "charged_total",
    "rate_limit_reads",
    "rate_limit_writes",
    "output_retention_seconds",
    "created_at",
}
KEY_FIELDS = {
    "id",
    "object",
    "account_id",
    "prefix",
    "created_at",
    "last_used_at",
    "revoked_at",
    "key",
}
EMPTY_LIST = {"object": "list", "data": [], "has_more": False, "next_cursor": None}
# Every admin route with a body it would accept: (method, path, json body).
ADMIN_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/admin/accounts", {"name": "sneaky", "credits": "5"}),
    ("GET", "/v1/admin/accounts", None),
    ("GET", "/v1/admin/accounts/default", None),
    ("PATCH", "/v1/admin/accounts/default", {"concurrency": 9}),
    ("POST", "/v1/admin/accounts/default/credits", {"amount": "5"}),
    ("POST", "/v1/admin/accounts/default/keys", None),
    ("GET", "/v1/admin/accounts/default/keys", None),
    ("DELETE", f"/v1/admin/keys/{UNKNOWN_KEY}", None),
]
ROUTE_IDS = [f"{method} {path}" for method, path, _ in ADMIN_ROUTES]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend, env={"TASKGATE_ADMIN_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    """A server without an admin token."""
    yield from module_server(tmp_path_factory, backend, "--no-workers")


@pytest.fixture(scope="module")
def admin(srv: ServerProcess) -> Iterator[httpx.Client]:
    with srv.client(TOKEN) as client:
        yield client


@pytest.fixture(scope="module")
def anon(srv: ServerProcess) -> Iterator[httpx.Client]:
    """A client that sends no credentials unless a request carries its own."""
    with httpx.Client(base_url=srv.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def plain_anon(plain: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=plain.base_url, timeout=30) as client:
        yield client


# -- helpers ---------------------------------------------------------------------------


def unique(prefix: str = "adm") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(admin: httpx.Client, **body: Any) -> dict[str, Any]:
    return json_of(admin.post("/v1/admin/accounts", json=body), 201)


def read_account(admin: httpx.Client, ref: str) -> dict[str, Any]:
    return json_of(admin.get(f"/v1/admin/accounts/{ref}"), 200)


def new_key(admin: httpx.Client, ref: str) -> dict[str, Any]:
    return json_of(admin.post(f"/v1/admin/accounts/{ref}/keys"), 201)


def keys_of(admin: httpx.Client, ref: str) -> list[dict[str, Any]]:
    body = json_of(admin.get(f"/v1/admin/accounts/{ref}/keys"), 200)
    assert set(body) == set(EMPTY_LIST) and body["object"] == "list", body
    assert (body["has_more"], body["next_cursor"]) == (False, None), body
    data: list[dict[str, Any]] = body["data"]
    return data


def all_accounts(admin: httpx.Client, limit: int = 100) -> list[dict[str, Any]]:
    """Every account, walking the cursor to the end."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(1000):
        body = json_of(admin.get("/v1/admin/accounts", params=params), 200)
        assert set(body) == set(EMPTY_LIST) and body["object"] == "list", body
        assert len(body["data"]) <= limit, body
        found.extend(body["data"])
        if not body["has_more"]:
            assert body["next_cursor"] is None, body
            return found
        assert body["data"] and body["next_cursor"] == body["data"][-1]["id"], body
        params["cursor"] = body["next_cursor"]
    raise AssertionError("the list never ended")


def rows(srv: ServerProcess) -> tuple[int, int, int]:
    """How many accounts, ledger entries and API keys the database holds."""
    found = sql(
        srv.data_dir,
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM ledger),"
        " (SELECT count(*) FROM api_keys)",
    )
    accounts, entries, keys = found[0]
    return int(accounts), int(entries), int(keys)


def grants_of(srv: ServerProcess, account_id: str) -> list[tuple[str, int, str | None]]:
    """An account's ledger entries as (kind, millicredits, note), oldest first."""
    found = sql(
        srv.data_dir,
        "SELECT kind, amount, note FROM ledger WHERE account_id = ? ORDER BY id",
        account_id,
    )
    return [(str(kind), int(amount), note) for kind, amount, note in found]


def account_body(
    made: dict[str, Any],
    name: str,
    *,
    concurrency: int = 4,
    balance: str = "0",
    reserved: str = "0",
    charged: str = "0",
    reads: str | None = None,
    writes: str | None = None,
) -> dict[str, Any]:
    """The account object expected for ``made`` (its id and created_at checked here)."""
    assert ACCOUNT_ID.match(made["id"]), made
    parse_time(made["created_at"])
    return {
        "id": made["id"],
        "object": "account",
        "name": name,
        "concurrency_limit": concurrency,
        "running": 0,
        "balance": balance,
        "reserved": reserved,
        "charged_total": charged,
        "rate_limit_reads": reads,
        "rate_limit_writes": writes,
        "output_retention_seconds": None,
        "created_at": made["created_at"],
    }


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- mounting and authentication ------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES, ids=ROUTE_IDS)
def test_without_a_token_every_admin_route_is_unknown(
    plain: ServerProcess,
    plain_anon: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    before = rows(plain)
    assert plain.api_key is not None
    unknown = assert_error(plain_anon.get("/v1/no-such-route"), 404, "not_found")
    for headers in ({}, bearer(plain.api_key), bearer(TOKEN)):
        response = send(plain_anon, method, path, body, headers)
        error = assert_error(response, 404, "not_found", None)
        assert error["message"] == unknown["message"]
    assert rows(plain) == before


def test_admin_routes_are_documented_only_with_a_token(
    anon: httpx.Client, plain_anon: httpx.Client
) -> None:
    paths = json_of(anon.get("/openapi.json"), 200)["paths"]
    admin_paths = {path: set(ops) for path, ops in paths.items() if path.startswith("/v1/admin")}
    assert admin_paths == {
        "/v1/admin/accounts": {"get", "post"},
        "/v1/admin/accounts/{account}": {"get", "patch"},
        "/v1/admin/accounts/{account}/credits": {"post"},
        "/v1/admin/accounts/{account}/keys": {"get", "post"},
        "/v1/admin/keys/{key_id}": {"delete"},
    }
    paths = json_of(plain_anon.get("/openapi.json"), 200)["paths"]
    assert "/v1/tasks" in paths
    assert [path for path in paths if "admin" in path] == []


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("Bearer", id="bearer-alone"),
        pytest.param("Bearer wrong-token", id="wrong"),
        pytest.param(f"Bearer {TOKEN}x", id="longer"),
        pytest.param(f"Bearer {TOKEN[:-1]}", id="shorter"),
        pytest.param(f"Bearer {TOKEN.upper()}", id="other-case"),
        pytest.param(TOKEN, id="no-scheme"),
        pytest.param(f"Basic {TOKEN}", id="basic"),
        pytest.param("account-key", id="account-key"),
    ],
)
def test_admin_routes_need_the_admin_token(
    srv: ServerProcess, admin: httpx.Client, anon: httpx.Client, authorization: str | None
) -> None:
    assert srv.api_key is not None
    if authorization == "account-key":
        authorization = f"Bearer {srv.api_key}"
    headers = {"Authorization": authorization} if authorization is not None else {}
    default_before = read_account(admin, "default")
    keys_before = keys_of(admin, "default")
    before = rows(srv)
    for method, path, body in ADMIN_ROUTES:
        response = send(anon, method, path, body, headers)
        error = assert_error(response, 401, "invalid_api_key", None)
        assert "token" in error["message"], error
    # A bad body or query does not get past the token check either.
    response = anon.post("/v1/admin/accounts", json={"name": ""}, headers=headers)
    assert_error(response, 401, "invalid_api_key")
    response = anon.get("/v1/admin/accounts", params={"limit": 0}, headers=headers)
    assert_error(response, 401, "invalid_api_key")
    assert rows(srv) == before
    assert read_account(admin, "default") == default_before
    assert keys_of(admin, "default") == keys_before
    assert_error(admin.get("/v1/admin/accounts/sneaky"), 404, "account_not_found")


def test_the_bearer_scheme_is_case_insensitive(anon: httpx.Client) -> None:
    for scheme in ("bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {TOKEN}"}
        response = anon.get("/v1/admin/accounts/default", headers=headers)
        assert json_of(response, 200)["name"] == "default"


def test_the_admin_token_is_not_an_api_key(srv: ServerProcess, admin: httpx.Client) -> None:
    before = rows(srv)
    assert_error(admin.get("/v1/tasks"), 401, "invalid_api_key")
    assert_error(admin.get("/v1/usage"), 401, "invalid_api_key")
    assert_error(admin.post("/v1/tasks", json={"workflow": "wait"}), 401, "invalid_api_key")
    assert rows(srv) == before


def test_an_unsupported_method_is_405(admin: httpx.Client) -> None:
    response = admin.put("/v1/admin/accounts/default", json={"concurrency": 2})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, PATCH"
    assert read_account(admin, "default")["concurrency_limit"] == 4


# -- create, get, list ----------------------------------------------------------------


def test_create_an_account_and_read_it_back(srv: ServerProcess, admin: httpx.Client) -> None:
    name = unique()
    started = datetime.now(UTC)
    made = create(
        admin,
        name=name,
        credits="12.5",
        concurrency=3,
        rate_limit_reads="5/minute",
        rate_limit_writes="10/second;1000/day",
    )
    assert made == account_body(
        made,
        name,
        concurrency=3,
        balance="12.5",
        reads="5/minute",
        writes="10/second;1000/day",
    )
    created_at = parse_time(made["created_at"])
    assert started - timedelta(seconds=1) <= created_at <= datetime.now(UTC)
    assert read_account(admin, made["id"]) == made
    assert read_account(admin, name) == made
    assert all_accounts(admin)[-1] == made
    assert keys_of(admin, name) == []
    assert grants_of(srv, made["id"]) == [("grant", 12500, "initial credits")]


def test_create_with_only_a_name(srv: ServerProcess, admin: httpx.Client) -> None:
    before = rows(srv)
    name = unique()
    made = create(admin, name=name)
    assert made == account_body(made, name)
    assert read_account(admin, name) == made
    # No credits: no ledger entry.
    assert grants_of(srv, made["id"]) == []
    assert rows(srv) == (before[0] + 1, before[1], before[2])


def test_create_strips_the_name_and_takes_100_characters(admin: httpx.Client) -> None:
    padded = unique("pad")
    made = create(admin, name=f"  {padded}\t ")
    assert made == account_body(made, padded)
    assert read_account(admin, padded) == made
    longest = unique("long").ljust(100, "n")
    made = create(admin, name=longest)
    assert made == account_body(made, longest)
    assert read_account(admin, longest) == made


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({"concurrency": 1}, {"concurrency_limit": 1}, id="concurrency-1"),
        pytest.param({"concurrency": 10000}, {"concurrency_limit": 10000}, id="concurrency-max"),
        pytest.param({"credits": "0"}, {"balance": "0"}, id="credits-0"),
        pytest.param({"credits": "0.001"}, {"balance": "0.001"}, id="credits-smallest"),
        pytest.param({"credits": "1e3"}, {"balance": "1000"}, id="credits-exponent"),
        pytest.param(
            {"rate_limit_reads": "unlimited", "rate_limit_writes": " 7/minute "},
            {"rate_limit_reads": "unlimited", "rate_limit_writes": "7/minute"},
            id="rate-limits",
        ),
        pytest.param(
            {"rate_limit_reads": "default", "rate_limit_writes": None},
            {"rate_limit_reads": None, "rate_limit_writes": None},
            id="rate-limits-default",
        ),
    ],
)
def test_create_accepts_the_edges(
    admin: httpx.Client, given: dict[str, Any], expected: dict[str, Any]
) -> None:
    name = unique("edge")
    made = create(admin, name=name, **given)
    assert made == {**account_body(made, name), **expected}
    assert read_account(admin, made["id"]) == made


_BAD_CREATE = [
    pytest.param({"name": ""}, 422, "invalid_param", "name", id="name-empty"),
    pytest.param({"name": "   "}, 422, "invalid_param", "name", id="name-blank"),
    pytest.param({"name": "x" * 101}, 422, "invalid_param", "name", id="name-101-chars"),
    pytest.param({"name": "acct_mine"}, 422, "invalid_param", "name", id="name-acct_"),
    pytest.param({"name": 5}, 422, "invalid_param", "name", id="name-int"),
    pytest.param({"name": None}, 422, "invalid_param", "name", id="name-null"),
    pytest.param({}, 422, "invalid_param", "name", id="name-missing"),
    pytest.param({"concurrency": 0}, 422, "invalid_param", "concurrency", id="concurrency-0"),
    pytest.param(
        {"concurrency": 10001}, 422, "invalid_param", "concurrency", id="concurrency-10001"
    ),
    pytest.param({"concurrency": 2.5}, 422, "invalid_param", "concurrency", id="concurrency-2.5"),
    pytest.param({"concurrency": "abc"}, 422, "invalid_param", "concurrency", id="concurrency-abc"),
    pytest.param({"concurrency": None}, 422, "invalid_param", "concurrency", id="concurrency-null"),
    pytest.param({"credits": "abc"}, 422, "invalid_param", "credits", id="credits-abc"),
    pytest.param({"credits": "-1"}, 422, "invalid_param", "credits", id="credits-negative"),
    pytest.param({"credits": "1.0001"}, 422, "invalid_param", "credits", id="credits-4-places"),
    pytest.param({"credits": "NaN"}, 422, "invalid_param", "credits", id="credits-nan"),
    pytest.param({"credits": "Infinity"}, 422, "invalid_param", "credits", id="credits-inf"),
    pytest.param({"credits": 5}, 422, "invalid_param", "credits", id="credits-number"),
    pytest.param(
        {"credits": "1e30"},
        422,
        "invalid_param",
        "credits",
        id="credits-huge",
    ),
    pytest.param(
        {"rate_limit_reads": "lots"}, 422, "invalid_param", "rate_limit_reads", id="reads-lots"
    ),
    pytest.param(
        {"rate_limit_reads": "0/minute"}, 422, "invalid_param", "rate_limit_reads", id="reads-0"
    ),
    pytest.param(
        {"rate_limit_reads": ""}, 422, "invalid_param", "rate_limit_reads", id="reads-empty"
    ),
    pytest.param(
        {"rate_limit_reads": "1/minute;lots"},
        422,
        "invalid_param",
        "rate_limit_reads",
        id="reads-half-good",
    ),
    pytest.param(
        {"rate_limit_writes": "lots"}, 422, "invalid_param", "rate_limit_writes", id="writes-lots"
    ),
    pytest.param(
        {"rate_limit_writes": "0/minute"},
        422,
        "invalid_param",
        "rate_limit_writes",
        id="writes-0",
    ),
    pytest.param(
        {"rate_limit_writes": 60}, 422, "invalid_param", "rate_limit_writes", id="writes-number"
    ),
    pytest.param({"balance": "5"}, 422, "invalid_param", "balance", id="unknown-field"),
    pytest.param({"id": UNKNOWN_ACCOUNT}, 422, "invalid_param", "id", id="unknown-field-id"),
]


@pytest.mark.parametrize(("body", "status", "code", "param"), _BAD_CREATE)
def test_create_refuses_bad_input(
    srv: ServerProcess,
    admin: httpx.Client,
    body: dict[str, Any],
    status: int,
    code: str,
    param: str,
) -> None:
    name = unique("bad")
    full = {"name": name, **body}
    if body == {}:
        full = {"credits": "5"}
    before, listed = rows(srv), all_accounts(admin)
    response = admin.post("/v1/admin/accounts", json=full)
    assert rows(srv) == before
    assert all_accounts(admin) == listed
    assert_error(admin.get(f"/v1/admin/accounts/{name}"), 404, "account_not_found")
    assert_error(response, status, code, param)


@pytest.mark.parametrize(
    ("content", "status", "code", "param"),
    [
        pytest.param(b'{"name": "half', 400, "invalid_json", None, id="malformed"),
        pytest.param(b"", 422, "invalid_param", None, id="empty"),
        pytest.param(b"[]", 422, "invalid_param", None, id="array"),
        pytest.param(b'"name"', 422, "invalid_param", None, id="string"),
    ],
)
def test_create_refuses_a_bad_body(
    srv: ServerProcess,
    admin: httpx.Client,
    content: bytes,
    status: int,
    code: str,
    param: str | None,
) -> None:
    before, listed = rows(srv), all_accounts(admin)
    response = send_raw(admin, "POST", "/v1/admin/accounts", content)
    assert_error(response, status, code, param)
    assert rows(srv) == before
    assert all_accounts(admin) == listed


def test_a_duplicate_name_is_409(srv: ServerProcess, admin: httpx.Client) -> None:
    name = unique("dup")
    made = create(admin, name=name, credits="3")
    before, listed = rows(srv), all_accounts(admin)
    for again in (name, f"  {name} ", "default"):
        response = admin.post(
            "/v1/admin/accounts", json={"name": again, "credits": "50", "concurrency": 9}
        )
        error = assert_error(response, 409, "account_exists", "name")
        assert again.strip() in error["message"], error
    assert rows(srv) == before
    assert all_accounts(admin) == listed
    assert read_account(admin, name) == made
    assert grants_of(srv, made["id"]) == [("grant", 3000, "initial credits")]


def test_the_list_pages_through_every_account_oldest_first(admin: httpx.Client) -> None:
    made = [create(admin, name=unique("page"))["id"] for _ in range(5)]
    everything = all_accounts(admin)
    ids = [account["id"] for account in everything]
    assert ids[0] == read_account(admin, "default")["id"]
    assert ids[-5:] == made
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(set(account) == ACCOUNT_FIELDS for account in everything)
    for limit in (1, 2, 3, 100):
        assert all_accounts(admin, limit) == everything
    # The default page is 20.
    first = json_of(admin.get("/v1/admin/accounts"), 200)
    assert first["data"] == everything[:20]
    assert first["has_more"] is (len(everything) > 20)
    # A cursor after the last account: an empty last page.
    last = admin.get("/v1/admin/accounts", params={"cursor": ids[-1]})
    assert json_of(last, 200) == EMPTY_LIST
    # A cursor from the middle: what follows it.
    middle = admin.get("/v1/admin/accounts", params={"cursor": made[1], "limit": 2})
    body = json_of(middle, 200)
    assert [account["id"] for account in body["data"]] == made[2:4]
    assert (body["has_more"], body["next_cursor"]) == (True, made[3])


@pytest.mark.parametrize(
    ("params", "param"),
    [
        pytest.param({"limit": 0}, "limit", id="limit-0"),
        pytest.param({"limit": 101}, "limit", id="limit-101"),
        pytest.param({"limit": -1}, "limit", id="limit-negative"),
        pytest.param({"limit": "ten"}, "limit", id="limit-word"),
        pytest.param({"limit": "1.5"}, "limit", id="limit-fraction"),
        pytest.param({"cursor": "nope"}, "cursor", id="cursor-word"),
        pytest.param({"cursor": ""}, "cursor", id="cursor-empty"),
        pytest.param({"cursor": "task_01J00000000000000000000000"}, "cursor", id="cursor-task"),
    ],
)
def test_the_list_refuses_bad_parameters(
    admin: httpx.Client, params: dict[str, Any], param: str
) -> None:
    assert_error(admin.get("/v1/admin/accounts", params=params), 400, "invalid_param", param)


# -- update -----------------------------------------------------------------------------


def test_patch_changes_only_the_fields_given(admin: httpx.Client) -> None:
    name = unique("patch")
    made = create(
        admin,
        name=name,
        credits="2",
        concurrency=3,
        rate_limit_reads="5/minute",
        rate_limit_writes="7/minute",
    )
    want = dict(made)

    def patch(ref: str, body: dict[str, Any]) -> None:
        updated = json_of(admin.patch(f"/v1/admin/accounts/{ref}", json=body), 200)
        assert updated == want
        assert read_account(admin, name) == want

    patch(name, {})
    want["concurrency_limit"] = 9
    patch(name, {"concurrency": 9})
    want["rate_limit_reads"] = "10/second;100/day"
    patch(made["id"], {"rate_limit_reads": " 10/second;100/day "})
    want["rate_limit_reads"] = None
    patch(name, {"rate_limit_reads": None})
    want["rate_limit_writes"] = "unlimited"
    patch(name, {"rate_limit_writes": "unlimited"})
    want["rate_limit_writes"] = None
    patch(made["id"], {"rate_limit_writes": "default"})
    want.update(concurrency_limit=10000, rate_limit_reads="1/second", rate_limit_writes="2/hour")
    patch(
        name,
        {"concurrency": 10000, "rate_limit_reads": "1/second", "rate_limit_writes": "2/hour"},
    )
    want["concurrency_limit"] = 1
    patch(name, {"concurrency": 1})
    assert (want["balance"], want["name"], want["id"]) == ("2", name, made["id"])


_BAD_PATCH = [
    pytest.param({"concurrency": 0}, 422, "concurrency", id="concurrency-0"),
    pytest.param({"concurrency": 10001}, 422, "concurrency", id="concurrency-10001"),
    pytest.param({"concurrency": 2.5}, 422, "concurrency", id="concurrency-2.5"),
    pytest.param({"concurrency": "abc"}, 422, "concurrency", id="concurrency-abc"),
    pytest.param(
        {"concurrency": None},
        422,
        "concurrency",
        id="concurrency-null",
    ),
    pytest.param({"rate_limit_reads": "lots"}, 422, "rate_limit_reads", id="reads-lots"),
    pytest.param({"rate_limit_reads": "0/minute"}, 422, "rate_limit_reads", id="reads-0"),
    pytest.param({"rate_limit_reads": 5}, 422, "rate_limit_reads", id="reads-number"),
    pytest.param({"rate_limit_writes": "lots"}, 422, "rate_limit_writes", id="writes-lots"),
    pytest.param({"rate_limit_writes": "0/minute"}, 422, "rate_limit_writes", id="writes-0"),
    pytest.param(
        {"concurrency": 2, "rate_limit_writes": "lots"},
        422,
        "rate_limit_writes",
        id="good-and-bad",
    ),
    pytest.param({"name": "renamed"}, 422, "name", id="unknown-field-name"),
    pytest.param({"credits": "5"}, 422, "credits", id="unknown-field-credits"),
]


@pytest.mark.parametrize(("body", "status", "param"), _BAD_PATCH)
def test_patch_refuses_bad_input(
    srv: ServerProcess, admin: httpx.Client, body: dict[str, Any], status: int, param: str
) -> None:
    name = unique("badpatch")
    made = create(admin, name=name, rate_limit_reads="5/minute", rate_limit_writes="6/minute")
    before = rows(srv)
    response = admin.patch(f"/v1/admin/accounts/{name}", json=body)
    assert rows(srv) == before
    assert read_account(admin, name) == made
    assert_error(response, status, "invalid_param", param)


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        pytest.param(b"{concurrency: 2}", 400, "invalid_json", id="malformed"),
        pytest.param(b"[]", 422, "invalid_param", id="array"),
    ],
)
def test_patch_refuses_a_bad_body(
    admin: httpx.Client, content: bytes, status: int, code: str
) -> None:
    name = unique("rawpatch")
    made = create(admin, name=name)
    response = send_raw(admin, "PATCH", f"/v1/admin/accounts/{name}", content)
    assert_error(response, status, code, None)
    assert read_account(admin, name) == made


# -- credits ----------------------------------------------------------------------------


def test_grant_credits(srv: ServerProcess, admin: httpx.Client) -> None:
    name = unique("grant")
    made = create(admin, name=name, credits="1")
    granted = admin.post(f"/v1/admin/accounts/{name}/credits", json={"amount": "2.5", "note": "hi"})
    want = {**made, "balance": "3.5"}
    assert json_of(granted, 201) == want
    assert read_account(admin, name) == want
    granted = admin.post(f"/v1/admin/accounts/{made['id']}/credits", json={"amount": "0.001"})
    want["balance"] = "3.501"
    assert json_of(granted, 201) == want
    assert read_account(admin, made["id"]) == want
    assert grants_of(srv, made["id"]) == [
        ("grant", 1000, "initial credits"),
        ("grant", 2500, "hi"),
        ("grant", 1, None),
    ]


_BAD_GRANT = [
    pytest.param({"amount": "0"}, "amount", id="amount-0"),
    pytest.param({"amount": "0.000"}, "amount", id="amount-0.000"),
    pytest.param({"amount": "-2"}, "amount", id="amount-negative"),
    pytest.param({"amount": "abc"}, "amount", id="amount-abc"),
    pytest.param({"amount": ""}, "amount", id="amount-empty"),
    pytest.param({"amount": "1.0001"}, "amount", id="amount-4-places"),
    pytest.param({"amount": "NaN"}, "amount", id="amount-nan"),
    pytest.param({"amount": 5}, "amount", id="amount-number"),
    pytest.param({"amount": None}, "amount", id="amount-null"),
    pytest.param({}, "amount", id="amount-missing"),
    pytest.param(
        {"amount": "1e30"},
        "amount",
        id="amount-huge",
    ),
    pytest.param({"amount": "1", "note": "n" * 501}, "note", id="note-too-long"),
    pytest.param({"amount": "1", "note": 5}, "note", id="note-number"),
    pytest.param({"amount": "1", "reason": "x"}, "reason", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "param"), _BAD_GRANT)
def test_grant_refuses_bad_input(
    srv: ServerProcess, admin: httpx.Client, body: dict[str, Any], param: str
) -> None:
    name = unique("badgrant")
    made = create(admin, name=name, credits="4")
    before = rows(srv)
    response = admin.post(f"/v1/admin/accounts/{name}/credits", json=body)
    assert rows(srv) == before
    assert read_account(admin, name) == made
    assert_error(response, 422, "invalid_param", param)


def test_grant_refuses_malformed_json(srv: ServerProcess, admin: httpx.Client) -> None:
    name = unique("rawgrant")
    made = create(admin, name=name, credits="4")
    before = rows(srv)
    response = send_raw(admin, "POST", f"/v1/admin/accounts/{name}/credits", b'{"amount": 1')
    assert_error(response, 400, "invalid_json", None)
    assert rows(srv) == before
    assert read_account(admin, name) == made


# -- keys ---------------------------------------------------------------------------------


def test_keys_are_made_listed_and_revoked(srv: ServerProcess, admin: httpx.Client) -> None:
    name = unique("keys")
    account = create(admin, name=name)
    started = datetime.now(UTC)
    first, second = new_key(admin, name), new_key(admin, account["id"])
    for key in (first, second):
        assert set(key) == KEY_FIELDS, key
        assert KEY_ID.fullmatch(key["id"]), key
        assert API_KEY.match(key["key"]), key
        assert key == {
            "id": key["id"],
            "object": "api_key",
            "account_id": account["id"],
            "prefix": key["key"][:16],
            "created_at": key["created_at"],
            "last_used_at": None,
            "revoked_at": None,
            "key": key["key"],
        }
        assert started - timedelta(seconds=1) <= parse_time(key["created_at"])
        with srv.client(key["key"]) as http:
            assert get_usage(http)["account_id"] == account["id"]
    assert first["id"] < second["id"] and first["key"] != second["key"]
    listed = keys_of(admin, name)
    assert listed == [{**first, "key": None}, {**second, "key": None}]

    # The API records when a key was last used (written in batches).
    def used() -> dict[str, Any] | None:
        found = keys_of(admin, name)[0]
        return found if found["last_used_at"] is not None else None

    first_used = wait_until(used, timeout=15, interval=0.2, message="last_used_at")
    assert parse_time(first_used["last_used_at"]) >= parse_time(first["created_at"])

    revoked = json_of(admin.delete(f"/v1/admin/keys/{first['id']}"), 200)
    assert revoked == {**first_used, "revoked_at": revoked["revoked_at"]}
    assert parse_time(revoked["revoked_at"]) >= parse_time(first["created_at"])
    # At once: the revoked key is refused; the other one still works.
    before = rows(srv)
    with srv.client(first["key"]) as http:
        assert_error(http.get("/v1/tasks"), 401, "invalid_api_key")
        assert_error(http.post("/v1/tasks", json={"workflow": "wait"}), 401, "invalid_api_key")
    assert rows(srv) == before
    with srv.client(second["key"]) as http:
        assert json_of(http.get("/v1/tasks"), 200)["data"] == []
    assert keys_of(admin, name)[0] == revoked
    # Revoking again changes nothing.
    assert json_of(admin.delete(f"/v1/admin/keys/{first['id']}"), 200) == revoked
    assert keys_of(admin, name)[0] == revoked


def test_revoke_refuses_what_is_not_a_known_key_id(srv: ServerProcess, admin: httpx.Client) -> None:
    name = unique("keep")
    account = create(admin, name=name)
    key = new_key(admin, name)
    listed = keys_of(admin, name)
    before = rows(srv)
    for unknown in (UNKNOWN_KEY, "key_", "key_nope"):
        assert_error(admin.delete(f"/v1/admin/keys/{unknown}"), 404, "key_not_found")
    for not_an_id in ("nope", key["prefix"], key["key"], account["id"], "KEY_x"):
        response = admin.delete(f"/v1/admin/keys/{not_an_id}")
        assert_error(response, 400, "invalid_param", "key_id")
    assert rows(srv) == before
    assert keys_of(admin, name) == listed
    with srv.client(key["key"]) as http:
        assert get_usage(http)["account_id"] == account["id"]


# -- unknown accounts -------------------------------------------------------------------------

_ACCOUNT_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/admin/accounts/{}", None),
    ("PATCH", "/v1/admin/accounts/{}", {"concurrency": 2}),
    ("PATCH", "/v1/admin/accounts/{}", {}),
    ("POST", "/v1/admin/accounts/{}/credits", {"amount": "5"}),
    ("POST", "/v1/admin/accounts/{}/keys", None),
    ("GET", "/v1/admin/accounts/{}/keys", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    _ACCOUNT_ROUTES,
    ids=[f"{method} {path}" for method, path, _ in _ACCOUNT_ROUTES],
)
@pytest.mark.parametrize("ref", ["nobody", UNKNOWN_ACCOUNT, "acct_", "DEFAULT"])
def test_an_unknown_account_is_404_on_every_account_route(
    srv: ServerProcess,
    admin: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    ref: str,
) -> None:
    before = rows(srv)
    error = assert_error(send(admin, method, path.format(ref), body), 404, "account_not_found")
    assert ref in error["message"], error
    assert rows(srv) == before


# -- what the admin API changes, seen by the task API -------------------------------------


def test_a_new_account_submits_with_its_new_key_and_is_charged(
    srv: ServerProcess, admin: httpx.Client
) -> None:
    name = unique("e2e")
    account = create(admin, name=name, credits="10", concurrency=2)
    key = new_key(admin, name)
    with srv.client(key["key"]) as http:
        usage = get_usage(http)
        assert (usage["account_id"], usage["balance"], usage["reserved"]) == (
            account["id"],
            "10",
            "0",
        )
        assert usage["concurrency_limit"] == 2
        task = submit(http, input={"credits": "1"})
        done = wait_status(http, task["id"], ["completed", "failed", "cancelled"])
        assert done["status"] == "completed", done
        usage = get_usage(http)
        assert (usage["balance"], usage["reserved"], usage["charged_total"]) == ("9", "0", "1")
    assert read_account(admin, name) == {**account, "balance": "9", "charged_total": "1"}
    # Credits granted through the admin API are there for the next task at once.
    granted = admin.post(f"/v1/admin/accounts/{name}/credits", json={"amount": "0.5"})
    assert json_of(granted, 201)["balance"] == "9.5"
    with srv.client(key["key"]) as http:
        assert get_usage(http)["balance"] == "9.5"
        refused = http.post("/v1/tasks", json={"workflow": "wait", "input": {"credits": "9.501"}})
        error = assert_error(refused, 402, "insufficient_credits")
        assert error["details"] == {"needed": "9.501", "available": "9.5"}


def test_a_rate_limit_override_takes_effect_at_once(
    admin: httpx.Client, srv: ServerProcess
) -> None:
    name = unique("rl")
    create(admin, name=name)
    key = new_key(admin, name)
    with srv.client(key["key"]) as http:
        for _ in range(5):  # the test server's default: unlimited
            assert http.get("/v1/tasks").status_code == 200
        patched = admin.patch(f"/v1/admin/accounts/{name}", json={"rate_limit_reads": "2/minute"})
        assert json_of(patched, 200)["rate_limit_reads"] == "2/minute"
        for _ in range(2):
            response = http.get("/v1/tasks")
            assert response.status_code == 200, response.text
        refused = http.get("/v1/tasks")
        assert_error(refused, 429, "rate_limited")
        assert refused.headers["retry-after"].isdigit(), refused.headers
        # Writes keep the server's default.
        task = submit(http)
        # Back to the default (unlimited here): allowed again at once.
        back = admin.patch(f"/v1/admin/accounts/{name}", json={"rate_limit_reads": None})
        assert json_of(back, 200)["rate_limit_reads"] is None
        for _ in range(3):
            response = http.get("/v1/tasks")
            assert response.status_code == 200, response.text
        wait_status(http, task["id"], ["completed"])
