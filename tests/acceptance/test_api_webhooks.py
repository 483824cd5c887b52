"""Webhook endpoint management over real HTTP (``/v1/webhooks``): create, list, read,
change, delete and rotate the secret; the SSRF guard on saved URLs (and its switch
``TASKGATE_ALLOW_PRIVATE_URLS``); every bad input refused with a code and nothing
written; other accounts' endpoints invisible; the reads and writes rate limits."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.apitools import (
    Account,
    assert_error,
    json_of,
    parse_time,
    quick_account,
    send,
    send_raw,
    sql,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, start_server

pytestmark = pytest.mark.acceptance

WEBHOOK_ID = re.compile(r"^we_[0-9A-HJKMNP-TV-Z]{26}$")
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
UNKNOWN_ID = "we_01J00000000000000000000000"
PUBLIC = "http://93.184.216.34/hooks"
ALL_EVENTS = [
    "task.created",
    "task.started",
    "task.progress",
    "task.cancel_requested",
    "task.requeued",
    "task.completed",
    "task.failed",
    "task.cancelled",
]
DEFAULT_EVENTS = [kind for kind in ALL_EVENTS if kind != "task.progress"]
FIELDS = {
    "id",
    "object",
    "url",
    "description",
    "enabled_events",
    "status",
    "disabled_reason",
    "secret",
    "created_at",
    "updated_at",
}
EMPTY_LIST = {"object": "list", "data": [], "has_more": False, "next_cursor": None}
# Every route on one endpoint with a body it would accept: (method, path, json body).
ENDPOINT_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/webhooks/{}", None),
    ("PATCH", "/v1/webhooks/{}", {"description": "taken", "status": "disabled"}),
    ("PATCH", "/v1/webhooks/{}", {}),
    ("DELETE", "/v1/webhooks/{}", None),
    ("POST", "/v1/webhooks/{}/rotate-secret", None),
]
ENDPOINT_ROUTE_IDS = [
    f"{method} {path}-{len(body or {})}" for method, path, body in ENDPOINT_ROUTES
]
_STATE = re.compile(r'^"(reads|writes)";r=(\d+);t=(\d+)$')
_POLICY = re.compile(r'^"(reads|writes)";q=(\d+);w=(\d+)$')


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, backend: Backend
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """The default server (private addresses refused) and one with
    ``TASKGATE_ALLOW_PRIVATE_URLS=true``, started side by side."""
    envs: list[dict[str, str]] = [{}, {"TASKGATE_ALLOW_PRIVATE_URLS": "true"}]
    with contextlib.ExitStack() as databases:
        dirs = [
            databases.enter_context(backend.bound(tmp_path_factory.mktemp("srv") / "data"))
            for _ in envs
        ]
        yield from _side_by_side(dirs, envs)


def _side_by_side(
    dirs: list[Path], envs: list[dict[str, str]]
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with ThreadPoolExecutor(len(envs)) as pool:
        futures = [
            pool.submit(start_server, data_dir, "--no-workers", env=env)
            for data_dir, env in zip(dirs, envs, strict=True)
        ]
        wait(futures)
    started = [future.result() for future in futures if future.exception() is None]
    try:
        for future in futures:
            future.result()  # raises the first start that failed
        yield started[0], started[1]
    finally:
        for proc in started:
            proc.stop()


@pytest.fixture(scope="module")
def srv(servers: tuple[ServerProcess, ServerProcess]) -> ServerProcess:
    """The default server: private addresses refused."""
    return servers[0]


@pytest.fixture(scope="module")
def open_srv(servers: tuple[ServerProcess, ServerProcess]) -> ServerProcess:
    """The server with ``TASKGATE_ALLOW_PRIVATE_URLS=true``."""
    return servers[1]


@pytest.fixture
def acct(srv: ServerProcess) -> Account:
    """A fresh account on the default server: no endpoints yet."""
    return quick_account(srv.data_dir, "wh")


@pytest.fixture
def http(srv: ServerProcess, acct: Account) -> Iterator[httpx.Client]:
    with srv.client(acct.key) as client:
        yield client


@pytest.fixture(scope="module")
def shared(srv: ServerProcess) -> Iterator[httpx.Client]:
    """A client of one account for the whole module, for tests that compare its list
    before and after rather than expect it empty."""
    account = quick_account(srv.data_dir, "shared")
    with srv.client(account.key) as client:
        yield client


# -- helpers ---------------------------------------------------------------------------


def count(server: ServerProcess) -> int:
    """How many rows ``webhook_endpoints`` holds."""
    return int(sql(server.data_dir, "SELECT count(*) FROM webhook_endpoints")[0][0])


def row(server: ServerProcess, endpoint_id: str) -> tuple[Any, ...] | None:
    """The endpoint's whole database row, read with sqlite3."""
    found = sql(server.data_dir, "SELECT * FROM webhook_endpoints WHERE id = ?", endpoint_id)
    return found[0] if found else None


def secrets_of(server: ServerProcess, endpoint_id: str) -> tuple[str, str | None]:
    """The stored (secret, previous_secret)."""
    found = sql(
        server.data_dir,
        "SELECT secret, previous_secret FROM webhook_endpoints WHERE id = ?",
        endpoint_id,
    )
    return str(found[0][0]), found[0][1]


def check_secret(secret: str) -> None:
    assert SECRET.match(secret), secret
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    return json_of(http.post("/v1/webhooks", json=body), 201)


def read(http: httpx.Client, endpoint_id: str) -> dict[str, Any]:
    return json_of(http.get(f"/v1/webhooks/{endpoint_id}"), 200)


def expected(
    made: dict[str, Any],
    url: str,
    *,
    description: str | None = None,
    events: list[str] | None = None,
    shown: bool = True,
) -> dict[str, Any]:
    """The endpoint object expected for a fresh ``made`` (id, secret and times checked
    here); ``shown``: whether the response carries the secret."""
    assert set(made) == FIELDS, made
    assert WEBHOOK_ID.match(made["id"]), made
    if shown:
        check_secret(made["secret"])
    assert made["created_at"] == made["updated_at"], made
    created = parse_time(made["created_at"])
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1), made
    return {
        "id": made["id"],
        "object": "webhook_endpoint",
        "url": url,
        "description": description,
        "enabled_events": DEFAULT_EVENTS if events is None else events,
        "status": "enabled",
        "disabled_reason": None,
        "secret": made["secret"] if shown else None,
        "created_at": made["created_at"],
        "updated_at": made["updated_at"],
    }


def hidden(endpoint: dict[str, Any]) -> dict[str, Any]:
    """The endpoint as reads show it: without its secret."""
    return {**endpoint, "secret": None}


def list_all(http: httpx.Client, limit: int = 100) -> list[dict[str, Any]]:
    """Every endpoint the list returns, walking the cursor to the end."""
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(100):
        body = json_of(http.get("/v1/webhooks", params=params), 200)
        assert set(body) == set(EMPTY_LIST) and body["object"] == "list", body
        assert len(body["data"]) <= limit, body
        found.extend(body["data"])
        if not body["has_more"]:
            assert body["next_cursor"] is None, body
            return found
        assert body["data"] and body["next_cursor"] == body["data"][-1]["id"], body
        params["cursor"] = body["next_cursor"]
    raise AssertionError("the list never ended")


def quota(response: httpx.Response) -> tuple[str, int, int]:
    """(policy, q, r) of a counted response; both headers name the same policy."""
    policy = _POLICY.match(response.headers["ratelimit-policy"])
    state = _STATE.match(response.headers["ratelimit"])
    assert policy and state and policy[1] == state[1], response.headers
    assert policy[3] == "60", response.headers
    return policy[1], int(policy[2]), int(state[2])


# -- create, read, list --------------------------------------------------------------------


def test_create_answers_the_endpoint_with_its_secret_once(
    srv: ServerProcess, http: httpx.Client
) -> None:
    before = count(srv)
    plain = json_of(http.post("/v1/webhooks", json={"url": PUBLIC}), 201)
    want_plain = expected(plain, PUBLIC)
    assert plain == want_plain
    full = create(
        http,
        url="https://93.184.216.34:8443/in?src=taskgate",
        description="billing receiver",
        enabled_events=["task.failed", "task.progress", "task.failed", "task.completed"],
    )
    want_full = expected(
        full,
        "https://93.184.216.34:8443/in?src=taskgate",
        description="billing receiver",
        events=["task.failed", "task.progress", "task.completed"],
    )
    assert full == want_full
    assert plain["id"] < full["id"] and plain["secret"] != full["secret"]
    assert count(srv) == before + 2
    # Reads never show the secret; the list is newest first.
    assert read(http, plain["id"]) == hidden(want_plain)
    assert read(http, full["id"]) == hidden(want_full)
    assert list_all(http) == [hidden(want_full), hidden(want_plain)]
    # The secret stored is the one answered.
    assert secrets_of(srv, plain["id"]) == (plain["secret"], None)
    assert secrets_of(srv, full["id"]) == (full["secret"], None)


def test_create_takes_every_event_type_and_null_fields(http: httpx.Client) -> None:
    every = create(http, url=PUBLIC, enabled_events=ALL_EVENTS, description=None)
    assert every == expected(every, PUBLIC, events=ALL_EVENTS)
    one = create(http, url=PUBLIC, enabled_events=["task.progress"], description="")
    assert one == expected(one, PUBLIC, description="", events=["task.progress"])
    # An explicit null asks for the default, as leaving it out does.
    default = create(http, url=PUBLIC, enabled_events=None)
    assert default == expected(default, PUBLIC)
    longest = "d" * 500
    described = create(http, url=PUBLIC, description=longest)
    assert described == expected(described, PUBLIC, description=longest)


@pytest.mark.parametrize(
    ("url", "saved"),
    [
        pytest.param("HTTP://93.184.216.34/Path?Q=1", "http://93.184.216.34/Path?Q=1", id="case"),
        pytest.param("http://93.184.216.34", "http://93.184.216.34", id="no-path"),
        pytest.param("https://93.184.216.34:8443/", "https://93.184.216.34:8443/", id="port"),
        pytest.param("http://93.184.216.34/a b", "http://93.184.216.34/a%20b", id="space"),
        pytest.param(
            "http://[2606:2800:220:1:248:1893:25c8:1946]/x",
            "http://[2606:2800:220:1:248:1893:25c8:1946]/x",
            id="public-ipv6",
        ),
    ],
)
def test_create_saves_the_url_normalised(http: httpx.Client, url: str, saved: str) -> None:
    made = create(http, url=url)
    assert made == expected(made, saved)
    assert read(http, made["id"]) == hidden(expected(made, saved))


_BLOCKED = [
    pytest.param("http://127.0.0.1/", "127.0.0.1", "127.0.0.1", "loopback (RFC 1122)", id="v4-lo"),
    pytest.param(
        "https://10.0.0.1:8443/x", "10.0.0.1", "10.0.0.1", "private-use (RFC 1918)", id="rfc1918"
    ),
    pytest.param(
        "http://169.254.169.254/latest/meta-data/",
        "169.254.169.254",
        "169.254.169.254",
        "cloud metadata (AWS, GCP, Azure, OpenStack, Oracle, …)",
        id="metadata",
    ),
    pytest.param("http://[::1]/", "::1", "::1", "loopback (RFC 4291)", id="v6-lo"),
    pytest.param(
        "http://[::ffff:127.0.0.1]/",
        "::ffff:127.0.0.1",
        "::ffff:127.0.0.1",
        "loopback (RFC 1122), embedded as 127.0.0.1 (IPv4-mapped)",
        id="v4-mapped",
    ),
    pytest.param(
        "http://localhost:8000/", "localhost", "127.0.0.1", "loopback (RFC 1122)", id="localhost"
    ),
]


@pytest.mark.parametrize(("url", "host", "address", "reason"), _BLOCKED)
def test_create_refuses_a_blocked_address(
    srv: ServerProcess, shared: httpx.Client, url: str, host: str, address: str, reason: str
) -> None:
    before, listed = count(srv), list_all(shared)
    response = shared.post("/v1/webhooks", json={"url": url})
    error = assert_error(response, 422, "invalid_param", "url")
    assert error["details"] == {"host": host, "address": address, "reason": reason}, error
    assert count(srv) == before
    assert list_all(shared) == listed


_BAD_CREATE = [
    pytest.param({"url": "ftp://93.184.216.34/"}, 422, "url", id="ftp"),
    pytest.param({"url": "javascript:alert(1)"}, 422, "url", id="javascript"),
    pytest.param({"url": "/relative/path"}, 422, "url", id="relative"),
    pytest.param({"url": "http://"}, 422, "url", id="no-host"),
    pytest.param({"url": "http:///hook"}, 422, "url", id="empty-host"),
    pytest.param({"url": "http://u:p@93.184.216.34/"}, 422, "url", id="credentials"),
    pytest.param({"url": "http://u@93.184.216.34/"}, 422, "url", id="user"),
    pytest.param({"url": "http://93.184.216.34:0/"}, 422, "url", id="port-0"),
    pytest.param({"url": "http://93.184.216.34:99999/"}, 422, "url", id="port-big"),
    pytest.param({"url": "http://2130706433/"}, 422, "url", id="decimal-host"),
    pytest.param({"url": "http://[fe80::1%25eth0]/"}, 422, "url", id="zone-id"),
    pytest.param({"url": "http://93.184.216.34/" + "a" * 2028}, 422, "url", id="url-2049"),
    pytest.param({"url": ""}, 422, "url", id="url-empty"),
    pytest.param({"url": None}, 422, "url", id="url-null"),
    pytest.param({"url": 5}, 422, "url", id="url-number"),
    pytest.param({}, 422, "url", id="url-missing"),
    pytest.param({"url": PUBLIC, "enabled_events": []}, 422, "enabled_events", id="no-events"),
    pytest.param(
        {"url": PUBLIC, "enabled_events": ["task.completed", "task.exploded"]},
        422,
        "enabled_events",
        id="unknown-event",
    ),
    pytest.param({"url": PUBLIC, "enabled_events": ["*"]}, 422, "enabled_events", id="wildcard"),
    pytest.param(
        {"url": PUBLIC, "enabled_events": "task.completed"},
        422,
        "enabled_events",
        id="events-string",
    ),
    pytest.param({"url": PUBLIC, "enabled_events": [1]}, 422, "enabled_events.0", id="event-int"),
    pytest.param({"url": PUBLIC, "description": "d" * 501}, 422, "description", id="desc-501"),
    pytest.param({"url": PUBLIC, "description": 5}, 422, "description", id="desc-number"),
    pytest.param({"url": PUBLIC, "secret": "whsec_mine"}, 422, "secret", id="extra-secret"),
    pytest.param({"url": PUBLIC, "status": "disabled"}, 422, "status", id="extra-status"),
    pytest.param({"url": PUBLIC, "id": UNKNOWN_ID}, 422, "id", id="extra-id"),
]


@pytest.mark.parametrize(("body", "status", "param"), _BAD_CREATE)
def test_create_refuses_bad_input(
    srv: ServerProcess, shared: httpx.Client, body: dict[str, Any], status: int, param: str
) -> None:
    before, listed = count(srv), list_all(shared)
    assert_error(shared.post("/v1/webhooks", json=body), status, "invalid_param", param)
    assert count(srv) == before
    assert list_all(shared) == listed


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        pytest.param(b'{"url": "http://93.184.216.34/"', 400, "invalid_json", id="malformed"),
        pytest.param(b"", 422, "invalid_param", id="empty"),
        pytest.param(b"[]", 422, "invalid_param", id="array"),
        pytest.param(b"null", 422, "invalid_param", id="null"),
    ],
)
def test_create_refuses_a_bad_body(
    srv: ServerProcess, shared: httpx.Client, content: bytes, status: int, code: str
) -> None:
    before, listed = count(srv), list_all(shared)
    assert_error(send_raw(shared, "POST", "/v1/webhooks", content), status, code, None)
    assert count(srv) == before
    assert list_all(shared) == listed


def test_private_urls_allowed_by_the_setting(open_srv: ServerProcess) -> None:
    account = quick_account(open_srv.data_dir, "open")
    urls = [
        ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/hook"),
        ("http://10.0.0.1/", "http://10.0.0.1/"),
        ("http://169.254.169.254/latest", "http://169.254.169.254/latest"),
        ("http://[::1]:8080/", "http://[::1]:8080/"),
        ("http://[::ffff:127.0.0.1]/", "http://[::ffff:127.0.0.1]/"),
        ("http://localhost:8000/x", "http://localhost:8000/x"),
        # Names are not resolved under the setting: saving sends nothing.
        ("https://Hooks.Example.INVALID/in", "https://hooks.example.invalid/in"),
        ("http://bücher.invalid/", "http://xn--bcher-kva.invalid/"),
    ]
    with open_srv.client(account.key) as http:
        made = [create(http, url=url) for url, _ in urls]
        want = [expected(m, saved) for m, (_, saved) in zip(made, urls, strict=True)]
        assert made == want
        assert list_all(http) == [hidden(endpoint) for endpoint in reversed(want)]
        # A change to a private address is allowed too.
        patched = json_of(
            http.patch(f"/v1/webhooks/{made[0]['id']}", json={"url": "http://192.168.1.5/"}), 200
        )
        assert patched == {
            **hidden(want[0]),
            "url": "http://192.168.1.5/",
            "updated_at": patched["updated_at"],
        }
        assert parse_time(patched["updated_at"]) >= parse_time(want[0]["updated_at"])
        assert read(http, made[0]["id"]) == patched


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/",
        "http://u:p@127.0.0.1/",
        "http://",
        "http://127.0.0.1:0/",
        "http://2130706433/",
        "http://0x7f.1/",
        "http://[fe80::1%25eth0]/",
    ],
)
def test_the_setting_keeps_the_other_url_checks(open_srv: ServerProcess, url: str) -> None:
    account = quick_account(open_srv.data_dir, "openbad")
    before = count(open_srv)
    with open_srv.client(account.key) as http:
        error = assert_error(http.post("/v1/webhooks", json={"url": url}), 422, "invalid_param")
        assert error["param"] == "url" and "details" not in error, error
        assert list_all(http) == []
    assert count(open_srv) == before


def test_list_pages_newest_first(http: httpx.Client) -> None:
    assert json_of(http.get("/v1/webhooks"), 200) == EMPTY_LIST
    made = [create(http, url=f"{PUBLIC}/{n}", description=str(n)) for n in range(5)]
    newest = [hidden(endpoint) for endpoint in reversed(made)]
    assert json_of(http.get("/v1/webhooks"), 200) == {**EMPTY_LIST, "data": newest}
    first = json_of(http.get("/v1/webhooks", params={"limit": 2}), 200)
    assert first == {
        "object": "list",
        "data": newest[:2],
        "has_more": True,
        "next_cursor": newest[1]["id"],
    }
    second = json_of(http.get("/v1/webhooks", params={"limit": 2, "cursor": newest[1]["id"]}), 200)
    assert second == {
        "object": "list",
        "data": newest[2:4],
        "has_more": True,
        "next_cursor": newest[3]["id"],
    }
    last = json_of(http.get("/v1/webhooks", params={"limit": 2, "cursor": newest[3]["id"]}), 200)
    assert last == {**EMPTY_LIST, "data": newest[4:]}
    exact = json_of(http.get("/v1/webhooks", params={"limit": 5}), 200)
    assert exact == {**EMPTY_LIST, "data": newest}
    assert list_all(http, limit=1) == newest
    assert list_all(http, limit=100) == newest
    # Past the oldest: an empty page.
    tail = json_of(http.get("/v1/webhooks", params={"cursor": newest[4]["id"]}), 200)
    assert tail == EMPTY_LIST


def test_list_default_page_is_20(http: httpx.Client) -> None:
    made = [create(http, url=PUBLIC) for _ in range(21)]
    page = json_of(http.get("/v1/webhooks"), 200)
    assert [e["id"] for e in page["data"]] == [e["id"] for e in reversed(made)][:20]
    assert (page["has_more"], page["next_cursor"]) == (True, made[1]["id"])


@pytest.mark.parametrize(
    ("params", "param"),
    [
        pytest.param({"limit": 0}, "limit", id="limit-0"),
        pytest.param({"limit": 101}, "limit", id="limit-101"),
        pytest.param({"limit": -1}, "limit", id="limit-negative"),
        pytest.param({"limit": "ten"}, "limit", id="limit-word"),
        pytest.param({"limit": "2.5"}, "limit", id="limit-fraction"),
        pytest.param({"cursor": "task_01J00000000000000000000000"}, "cursor", id="cursor-task"),
        pytest.param({"cursor": "nope"}, "cursor", id="cursor-word"),
        pytest.param({"cursor": ""}, "cursor", id="cursor-empty"),
    ],
)
def test_list_refuses_bad_parameters(
    shared: httpx.Client, params: dict[str, Any], param: str
) -> None:
    create(shared, url=PUBLIC)
    listed = list_all(shared)
    assert_error(shared.get("/v1/webhooks", params=params), 400, "invalid_param", param)
    assert list_all(shared) == listed


# -- change ----------------------------------------------------------------------------------


def test_patch_changes_only_the_fields_given(srv: ServerProcess, http: httpx.Client) -> None:
    made = create(http, url=PUBLIC, description="first")
    want = hidden(expected(made, PUBLIC, description="first"))
    path = f"/v1/webhooks/{made['id']}"

    def patch(body: dict[str, Any], **changes: Any) -> None:
        want.update(changes)
        updated = json_of(http.patch(path, json=body), 200)
        assert updated["updated_at"] >= want["updated_at"], (updated, want)
        want["updated_at"] = updated["updated_at"]
        assert updated == want
        assert read(http, made["id"]) == want
        assert list_all(http) == [want]

    # Nothing given: nothing changes, updated_at included.
    unchanged = json_of(http.patch(path, json={}), 200)
    assert unchanged == want
    patch({"description": "second"}, description="second")
    patch({"description": None}, description=None)
    patch(
        {"enabled_events": ["task.progress", "task.created", "task.progress"]},
        enabled_events=["task.progress", "task.created"],
    )
    patch({"status": "disabled"}, status="disabled")
    patch({"status": "disabled"})
    patch({"status": "enabled"}, status="enabled")
    patch({"url": "HTTPS://93.184.216.34:8443/v2"}, url="https://93.184.216.34:8443/v2")
    patch(
        {"url": PUBLIC, "description": "all", "enabled_events": ALL_EVENTS, "status": "disabled"},
        url=PUBLIC,
        description="all",
        enabled_events=ALL_EVENTS,
        status="disabled",
    )
    assert parse_time(want["updated_at"]) > parse_time(want["created_at"])
    assert (want["created_at"], want["disabled_reason"]) == (made["created_at"], None)
    # The secret is not touched by a change.
    assert secrets_of(srv, made["id"]) == (made["secret"], None)


_BAD_PATCH = [
    pytest.param({"url": None}, "url", id="url-null"),
    pytest.param({"enabled_events": None}, "enabled_events", id="events-null"),
    pytest.param({"status": None}, "status", id="status-null"),
    pytest.param({"status": "paused"}, "status", id="status-paused"),
    pytest.param({"status": "ENABLED"}, "status", id="status-upper"),
    pytest.param({"status": ""}, "status", id="status-empty"),
    pytest.param({"url": "ftp://93.184.216.34/"}, "url", id="url-ftp"),
    pytest.param({"url": "javascript:alert(1)"}, "url", id="url-javascript"),
    pytest.param({"url": "http:///x"}, "url", id="url-no-host"),
    pytest.param({"url": "http://u:p@93.184.216.34/"}, "url", id="url-credentials"),
    pytest.param({"url": "http://127.0.0.1/"}, "url", id="url-loopback"),
    pytest.param({"url": "http://10.0.0.1/"}, "url", id="url-private"),
    pytest.param({"url": "http://169.254.169.254/"}, "url", id="url-metadata"),
    pytest.param({"url": "http://[::1]/"}, "url", id="url-v6-loopback"),
    pytest.param({"url": "http://[::ffff:127.0.0.1]/"}, "url", id="url-mapped"),
    pytest.param({"url": "http://localhost/"}, "url", id="url-localhost"),
    pytest.param({"url": "http://93.184.216.34/" + "a" * 2028}, "url", id="url-too-long"),
    pytest.param({"url": ""}, "url", id="url-empty"),
    pytest.param({"enabled_events": []}, "enabled_events", id="events-empty"),
    pytest.param({"enabled_events": ["task.nope"]}, "enabled_events", id="events-unknown"),
    pytest.param({"enabled_events": [None]}, "enabled_events.0", id="events-null-item"),
    pytest.param({"description": "d" * 501}, "description", id="desc-501"),
    pytest.param({"secret": "whsec_mine"}, "secret", id="extra-secret"),
    pytest.param({"disabled_reason": "x"}, "disabled_reason", id="extra-reason"),
    pytest.param({"description": "fine", "status": "paused"}, "status", id="good-and-bad"),
    pytest.param({"description": "fine", "url": "http://10.0.0.1/"}, "url", id="good-and-bad-url"),
]


@pytest.mark.parametrize(("body", "param"), _BAD_PATCH)
def test_patch_refuses_bad_input(
    srv: ServerProcess, shared: httpx.Client, body: dict[str, Any], param: str
) -> None:
    made = create(shared, url=PUBLIC, description="keep", enabled_events=["task.failed"])
    stored = row(srv, made["id"])
    assert_error(shared.patch(f"/v1/webhooks/{made['id']}", json=body), 422, "invalid_param", param)
    assert read(shared, made["id"]) == hidden(made)
    assert row(srv, made["id"]) == stored


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        pytest.param(b'{"description": ', 400, "invalid_json", id="malformed"),
        pytest.param(b"[]", 422, "invalid_param", id="array"),
        pytest.param(b'"disabled"', 422, "invalid_param", id="string"),
    ],
)
def test_patch_refuses_a_bad_body(
    srv: ServerProcess, shared: httpx.Client, content: bytes, status: int, code: str
) -> None:
    made = create(shared, url=PUBLIC)
    stored = row(srv, made["id"])
    response = send_raw(shared, "PATCH", f"/v1/webhooks/{made['id']}", content)
    assert_error(response, status, code, None)
    assert read(shared, made["id"]) == hidden(made)
    assert row(srv, made["id"]) == stored


# -- delete, rotate ------------------------------------------------------------------------------


def test_delete_removes_the_endpoint(srv: ServerProcess, http: httpx.Client) -> None:
    kept, gone = create(http, url=PUBLIC), create(http, url=PUBLIC)
    before = count(srv)
    deleted = json_of(http.delete(f"/v1/webhooks/{gone['id']}"), 200)
    assert deleted == {"id": gone["id"], "object": "webhook_endpoint", "deleted": True}
    assert count(srv) == before - 1
    assert row(srv, gone["id"]) is None
    assert list_all(http) == [hidden(kept)]
    for method, path, body in ENDPOINT_ROUTES:
        response = send(http, method, path.format(gone["id"]), body)
        assert_error(response, 404, "webhook_not_found")
    assert count(srv) == before - 1
    assert list_all(http) == [hidden(kept)]


def test_rotate_secret_gives_a_new_secret_each_time(srv: ServerProcess, http: httpx.Client) -> None:
    made = create(http, url=PUBLIC, description="rot", enabled_events=["task.completed"])
    seen = {made["secret"]}
    previous = made
    for _ in range(3):
        rotated = json_of(http.post(f"/v1/webhooks/{made['id']}/rotate-secret"), 200)
        check_secret(rotated["secret"])
        assert rotated["secret"] not in seen
        seen.add(rotated["secret"])
        assert parse_time(rotated["updated_at"]) >= parse_time(previous["updated_at"])
        assert rotated == {
            **previous,
            "secret": rotated["secret"],
            "updated_at": rotated["updated_at"],
        }
        # Reads never show it; the database keeps the one before for the overlap.
        assert read(http, made["id"]) == hidden(rotated)
        assert list_all(http) == [hidden(rotated)]
        assert secrets_of(srv, made["id"]) == (rotated["secret"], previous["secret"])
        previous = rotated
    assert len(seen) == 4


# -- unknown ids, other accounts, authentication ------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINT_ROUTES, ids=ENDPOINT_ROUTE_IDS)
@pytest.mark.parametrize("ref", [UNKNOWN_ID, "we_nope", "nope", "task_01J00000000000000000000000"])
def test_an_unknown_id_is_404(
    srv: ServerProcess,
    shared: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    ref: str,
) -> None:
    create(shared, url=PUBLIC)
    before, listed = count(srv), list_all(shared)
    error = assert_error(send(shared, method, path.format(ref), body), 404, "webhook_not_found")
    assert error["message"] == f"No webhook endpoint {ref!r}.", error
    assert count(srv) == before
    assert list_all(shared) == listed


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINT_ROUTES, ids=ENDPOINT_ROUTE_IDS)
def test_another_accounts_endpoint_is_404(
    srv: ServerProcess,
    http: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    mine = create(http, url=PUBLIC, description="mine")
    stored = row(srv, mine["id"])
    other = quick_account(srv.data_dir, "other")
    with srv.client(other.key) as theirs:
        error = assert_error(
            send(theirs, method, path.format(mine["id"]), body), 404, "webhook_not_found"
        )
        assert error["message"] == f"No webhook endpoint {mine['id']!r}.", error
        assert list_all(theirs) == []
        # Their cursor walks only their own endpoints.
        page = json_of(theirs.get("/v1/webhooks", params={"cursor": "we_Z"}), 200)
        assert page == EMPTY_LIST
    assert row(srv, mine["id"]) == stored
    assert read(http, mine["id"]) == hidden(mine)
    assert list_all(http) == [hidden(mine)]


_ALL_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/webhooks", {"url": PUBLIC}),
    ("GET", "/v1/webhooks", None),
    *ENDPOINT_ROUTES,
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    _ALL_ROUTES,
    ids=[f"{method} {path}-{len(body or {})}" for method, path, body in _ALL_ROUTES],
)
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer tg_live_" + "x" * 38}, id="unknown-key"),
        pytest.param({"Authorization": "Basic dTpw"}, id="basic"),
    ],
)
def test_every_route_needs_a_key(
    srv: ServerProcess,
    shared: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
) -> None:
    made = create(shared, url=PUBLIC)
    stored, before, listed = row(srv, made["id"]), count(srv), list_all(shared)
    with httpx.Client(base_url=srv.base_url, timeout=30, headers=headers) as anon:
        response = send(anon, method, path.format(made["id"]), body)
    assert_error(response, 401, "invalid_api_key")
    assert count(srv) == before
    assert row(srv, made["id"]) == stored
    assert list_all(shared) == listed


# -- rate limits --------------------------------------------------------------------------------


def test_reads_and_writes_count_against_their_limits(srv: ServerProcess) -> None:
    account = quick_account(srv.data_dir, "whkrl")
    sql(
        srv.data_dir,
        "UPDATE accounts SET rate_limit_reads = ?, rate_limit_writes = ? WHERE id = ?",
        "3/minute",
        "4/minute",
        account.id,
    )
    with srv.client(account.key) as http:
        made = http.post("/v1/webhooks", json={"url": PUBLIC})
        assert made.status_code == 201, made.text
        assert quota(made) == ("writes", 4, 3)
        endpoint_id = made.json()["id"]
        assert quota(http.get("/v1/webhooks")) == ("reads", 3, 2)
        assert quota(http.get(f"/v1/webhooks/{endpoint_id}")) == ("reads", 3, 1)
        patched = http.patch(f"/v1/webhooks/{endpoint_id}", json={"description": "x"})
        assert patched.status_code == 200, patched.text
        assert quota(patched) == ("writes", 4, 2)
        rotated = http.post(f"/v1/webhooks/{endpoint_id}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
        assert quota(rotated) == ("writes", 4, 1)
        # An error after counting carries the headers too.
        missing = http.delete(f"/v1/webhooks/{UNKNOWN_ID}")
        assert_error(missing, 404, "webhook_not_found")
        assert quota(missing) == ("writes", 4, 0)
        before, stored = count(srv), row(srv, endpoint_id)
        for method, path, body in [
            ("POST", "/v1/webhooks", {"url": PUBLIC}),
            ("PATCH", f"/v1/webhooks/{endpoint_id}", {"description": "y"}),
            ("POST", f"/v1/webhooks/{endpoint_id}/rotate-secret", None),
            ("DELETE", f"/v1/webhooks/{endpoint_id}", None),
        ]:
            refused = send(http, method, path, body)
            assert_error(refused, 429, "rate_limited")
            assert quota(refused) == ("writes", 4, 0)
            assert refused.headers["retry-after"].isdigit(), refused.headers
        assert (count(srv), row(srv, endpoint_id)) == (before, stored)
        # Reads have their own quota, one left.
        last = http.get(f"/v1/webhooks/{endpoint_id}")
        assert last.status_code == 200 and last.json()["description"] == "x", last.text
        assert quota(last) == ("reads", 3, 0)
        assert_error(http.get("/v1/webhooks"), 429, "rate_limited")
        assert_error(http.get(f"/v1/webhooks/{endpoint_id}"), 429, "rate_limited")
