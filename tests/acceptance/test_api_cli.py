"""Accounts and keys made with the real ``taskgate`` CLI, used against a real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.acceptance.apitools import (
    ACCOUNT_ID,
    API_KEY,
    KEY_ID,
    assert_error,
    create_account,
    module_server,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, run_cli, wait_until

pytestmark = pytest.mark.acceptance

# Every key a test in this module saw, to look for in the database files at the end.
SEEN_KEYS: list[str] = []


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    yield from module_server(tmp_path_factory, backend, "--no-workers")


def _name(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _cli(srv: ServerProcess, *args: str) -> tuple[int, str, str]:
    result = run_cli(srv.data_dir, *args, check=False)
    return result.returncode, result.stdout, result.stderr


def _new_key(srv: ServerProcess, account: str) -> str:
    code, out, err = _cli(srv, "keys", "create", account)
    assert code == 0, err
    key = out.strip()
    assert API_KEY.match(key), out
    assert out.count("tg_live_") == 1
    SEEN_KEYS.append(key)
    return key


def _status(srv: ServerProcess, key: str) -> int:
    with srv.client(key) as http:
        return http.get("/v1/tasks").status_code


def _row(listing: str, key: str) -> str:
    rows = [line for line in listing.splitlines() if key[:16] in line]
    assert len(rows) == 1, listing
    return rows[0]


COLUMNS = ("id", "prefix", "created", "last used", "revoked")


def _cells(listing: str, key: str) -> dict[str, str]:
    """The listing's row for a key, by column."""
    cells = [cell.strip() for cell in _row(listing, key).strip().strip("│").split("│")]
    assert len(cells) == len(COLUMNS), cells
    return dict(zip(COLUMNS, cells, strict=True))


def _last_used(srv: ServerProcess, account: str, key: str) -> str:
    return _cells(run_cli(srv.data_dir, "keys", "list", account).stdout, key)["last used"]


def test_create_an_account_and_a_key(srv: ServerProcess) -> None:
    name = _name()
    code, out, err = _cli(
        srv, "accounts", "create", name, "--credits", "12.5", "--concurrency", "3"
    )
    assert code == 0, err
    account_id = out.strip()
    assert ACCOUNT_ID.match(account_id), out
    assert out.strip().count("\n") == 0

    by_name = _new_key(srv, name)
    by_id = _new_key(srv, account_id)
    assert by_name != by_id
    assert _status(srv, by_name) == 200
    assert _status(srv, by_id) == 200
    # Both keys act for the same account.
    with srv.client(by_name) as one, srv.client(by_id) as other:
        task = one.post("/v1/tasks", json={"workflow": "wait"}).json()
        assert other.get(f"/v1/tasks/{task['id']}").status_code == 200
        assert [t["id"] for t in other.get("/v1/tasks").json()["data"]] == [task["id"]]


def test_keys_create_says_the_key_is_shown_once(srv: ServerProcess) -> None:
    account = create_account(srv, "once")
    SEEN_KEYS.append(account.key)
    code, out, err = _cli(srv, "keys", "create", account.name)
    assert code == 0, err
    key = out.strip()
    SEEN_KEYS.append(key)
    assert "once" in err
    assert KEY_ID.search(err), err
    assert key not in err
    assert key[:16] in err


def test_a_duplicate_account_name_is_refused(srv: ServerProcess) -> None:
    account = create_account(srv, "dup")
    SEEN_KEYS.append(account.key)
    code, out, err = _cli(srv, "accounts", "create", account.name, "--credits", "5")
    assert code != 0
    assert out.strip() == ""
    assert "already exists" in err and account.name in err, err
    assert "Traceback" not in err
    # The first account is untouched and still the one the name points at.
    listing = run_cli(srv.data_dir, "keys", "list", account.name).stdout
    assert account.key[:16] in listing
    assert _status(srv, account.key) == 200


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--credits", "abc"], id="credits-abc"),
        pytest.param(["--credits", "1.2345"], id="credits-4-decimals"),
        pytest.param(["--credits=-1"], id="credits-negative"),
        pytest.param(["--credits", "NaN"], id="credits-nan"),
        pytest.param(["--credits", "Infinity"], id="credits-infinity"),
        pytest.param(["--credits", ""], id="credits-empty"),
        pytest.param(["--concurrency", "0"], id="concurrency-0"),
        pytest.param(["--concurrency", "abc"], id="concurrency-abc"),
    ],
)
def test_bad_account_options_are_refused(srv: ServerProcess, args: list[str]) -> None:
    name = _name("bad")
    code, out, err = _cli(srv, "accounts", "create", name, *args)
    assert code != 0
    assert not ACCOUNT_ID.search(out), out
    assert "Traceback" not in err
    assert err.strip(), "no message"
    # Nothing was created under that name.
    code, _, err = _cli(srv, "keys", "create", name)
    assert code != 0
    assert "No account" in err


@pytest.mark.parametrize("name", ["acct_01J0000000000000000000000Z", "", "   ", "x" * 101])
def test_bad_account_names_are_refused(srv: ServerProcess, name: str) -> None:
    code, out, err = _cli(srv, "accounts", "create", name)
    assert code != 0
    assert not ACCOUNT_ID.search(out), out
    assert "Traceback" not in err and err.strip()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["keys", "create", "no-such-account"], id="create-by-name"),
        pytest.param(["keys", "create", "acct_01J0000000000000000000000Z"], id="create-by-id"),
        pytest.param(["keys", "list", "no-such-account"], id="list"),
        pytest.param(["keys", "revoke", "key_01J0000000000000000000000Z"], id="revoke-id"),
        pytest.param(["keys", "revoke", "tg_live_zzzzzzzz"], id="revoke-prefix"),
        pytest.param(["keys", "revoke", "nothing"], id="revoke-garbage"),
    ],
)
def test_unknown_accounts_and_keys(srv: ServerProcess, args: list[str]) -> None:
    code, out, err = _cli(srv, *args)
    assert code != 0
    assert not API_KEY.search(out.strip()), out
    assert "No account" in err or "No key" in err, err
    assert "Traceback" not in err


def test_keys_list_never_shows_a_key(srv: ServerProcess) -> None:
    account = create_account(srv, "list")
    second = _new_key(srv, account.id)
    SEEN_KEYS.append(account.key)
    code, listing, err = _cli(srv, "keys", "list", account.name)
    assert code == 0, err
    assert listing == run_cli(srv.data_dir, "keys", "list", account.id).stdout
    assert len(set(KEY_ID.findall(listing))) == 2, listing
    for key in (account.key, second):
        row = _row(listing, key)
        assert KEY_ID.search(row)
        assert key not in listing
        assert key[16:] not in listing
        assert key[16:24] not in listing
        assert _cells(listing, key)["last used"] == "never"


def test_revoke_by_id_and_by_prefix(srv: ServerProcess) -> None:
    account = create_account(srv, "revoke")
    second, third = _new_key(srv, account.id), _new_key(srv, account.name)
    SEEN_KEYS.append(account.key)
    listing = run_cli(srv.data_dir, "keys", "list", account.id).stdout
    first_id = KEY_ID.search(_row(listing, account.key))
    assert first_id is not None

    code, out, err = _cli(srv, "keys", "revoke", first_id.group())
    assert code == 0, err
    assert first_id.group() in out
    code, out, err = _cli(srv, "keys", "revoke", second[:16])
    assert code == 0, err
    second_id = KEY_ID.search(_row(listing, second))
    assert second_id is not None and second_id.group() in out

    with srv.client(account.key) as http:
        assert_error(http.get("/v1/tasks"), 401, "invalid_api_key")
    with srv.client(second) as http:
        assert_error(http.get("/v1/tasks"), 401, "invalid_api_key")
    assert _status(srv, third) == 200
    after = run_cli(srv.data_dir, "keys", "list", account.id).stdout
    for key in (account.key, second):
        assert _cells(after, key)["revoked"].endswith("Z"), after  # a revoked-at time
    assert _cells(after, third)["revoked"] == ""
    # Revoking again changes nothing and does not fail.
    code, _, err = _cli(srv, "keys", "revoke", first_id.group())
    assert code == 0, err
    assert _status(srv, account.key) == 401


def test_revoke_by_the_key_itself_and_the_listed_prefix(srv: ServerProcess) -> None:
    account = create_account(srv, "revoke-full")
    second = _new_key(srv, account.id)
    SEEN_KEYS.append(account.key)
    code, _, err = _cli(srv, "keys", "revoke", account.key)
    assert code == 0, err
    # As ``keys list`` shows it, with the ellipsis.
    code, _, err = _cli(srv, "keys", "revoke", second[:16] + "…")
    assert code == 0, err
    assert _status(srv, account.key) == 401
    assert _status(srv, second) == 401


def test_an_ambiguous_prefix_is_refused(srv: ServerProcess) -> None:
    account = create_account(srv, "ambiguous")
    SEEN_KEYS.append(account.key)
    code, _, err = _cli(srv, "keys", "revoke", "tg_live_")
    assert code != 0
    assert "Traceback" not in err and err.strip()
    assert _status(srv, account.key) == 200


def test_last_used_at_is_recorded(srv: ServerProcess) -> None:
    account = create_account(srv, "used")
    SEEN_KEYS.append(account.key)
    assert _last_used(srv, account.id, account.key) == "never"
    assert _status(srv, account.key) == 200

    def recorded() -> bool:
        return _last_used(srv, account.id, account.key) != "never"

    # The API writes key use every few seconds.
    wait_until(recorded, timeout=30, interval=0.5, message="last_used_at to be recorded")
    row = _cells(run_cli(srv.data_dir, "keys", "list", account.id).stdout, account.key)
    assert row["last used"].endswith("Z"), row
    assert row["created"] <= row["last used"]
    assert row["revoked"] == ""


def test_a_refused_key_is_not_recorded_as_used(srv: ServerProcess) -> None:
    account = create_account(srv, "unused")
    SEEN_KEYS.append(account.key)
    run_cli(srv.data_dir, "keys", "revoke", account.key[:16])
    with httpx.Client(base_url=srv.base_url) as http:
        response = http.get("/v1/tasks", headers={"Authorization": f"Bearer {account.key}"})
        assert_error(response, 401, "invalid_api_key")
    # A used key shows up within a flush; this one must still say "never" after it.
    other = create_account(srv, "flushmark")
    SEEN_KEYS.append(other.key)
    assert _status(srv, other.key) == 200
    wait_until(
        lambda: _last_used(srv, other.id, other.key) != "never",
        timeout=30,
        interval=0.5,
        message="the other key's use to be flushed",
    )
    assert _last_used(srv, account.id, account.key) == "never"


@pytest.mark.sqlite_only
def test_no_plaintext_key_is_stored(srv: ServerProcess) -> None:
    """Runs last in the module: every key made above, and the default account's key
    that ``serve`` printed, are absent from every file in the data dir. SQLite only:
    there the data dir holds the database file, which the test reads byte by byte."""
    assert srv.api_key is not None
    fresh = create_account(srv, "stored")
    extra = _new_key(srv, fresh.name)
    assert _status(srv, fresh.key) == 200
    assert _status(srv, extra) == 200
    keys = [*SEEN_KEYS, srv.api_key, fresh.key, extra]
    files = [path for path in srv.data_dir.rglob("*") if path.is_file()]
    assert any(path.name == "taskgate.db" for path in files), files
    for path in files:
        content = path.read_bytes()
        for key in keys:
            secret = key[16:].encode()  # what is never shown after creation
            assert secret not in content, (path, key[:16])
            assert key.encode() not in content, (path, key[:16])
