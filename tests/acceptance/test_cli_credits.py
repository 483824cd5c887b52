"""Credits from the command line: ``credits grant`` and ``credits show``, ``accounts
update`` refusing bad limits with nothing written, and ``taskgate doctor`` clean after
real work and naming the ledger entry and task when a row is corrupted by hand."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.apitools import (
    TERMINAL,
    get_usage,
    module_server,
    quick_account,
    sql,
    submit,
    wait_status,
)
from tests.databases import Backend
from tests.helpers import ServerProcess, postgres_url, run_cli

pytestmark = pytest.mark.acceptance

#: What a command run from a pipe or cron job gets (rich wraps at the width).
NARROW = {"COLUMNS": "80"}
CONSISTENT = "Credits are consistent: every account and task checks out."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[ServerProcess]:
    """A server with two worker slots, its data dir shared with the CLI runs."""
    yield from module_server(tmp_path_factory, backend)


def _cli_all(
    data_dir: Path, runs: Sequence[Sequence[str]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run CLI commands side by side (each spends ~2 s importing), results in order."""
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(lambda args: run_cli(data_dir, *args, check=False, **NARROW), runs))


def _said(result: subprocess.CompletedProcess[str]) -> str:
    """Everything a command printed, with rich's line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def _out(result: subprocess.CompletedProcess[str]) -> str:
    """Its standard output, with rich's line wrapping undone."""
    return " ".join(result.stdout.split())


def _violations(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Doctor's VIOLATION reports, each one whole (wrapped lines joined back)."""
    text = _out(result)
    assert text.startswith("VIOLATION "), result.stdout
    return ["VIOLATION " + part.strip() for part in text.split("VIOLATION ")[1:]]


def _assert_refused(
    args: Sequence[str], result: subprocess.CompletedProcess[str], code: int, says: Sequence[str]
) -> None:
    """Refused with this exit code and a one-line message holding each of ``says`` (the
    value at fault, the error code), not a traceback; exit 1 is taskgate's own error."""
    said = _said(result)
    assert result.returncode == code, (args, said)
    assert "Traceback" not in said, (args, said)
    assert result.stdout.strip() == "", (args, said)
    if code == 1:
        assert said.startswith("error: "), (args, said)
    for part in says:
        assert part in said.lower(), (args, part, said)


def _ledger_size(data_dir: Path) -> int:
    return int(sql(data_dir, "SELECT count(*) FROM ledger")[0][0])


def _account_row(data_dir: Path, account_id: str) -> tuple[Any, ...]:
    (row,) = sql(
        data_dir,
        "SELECT concurrency_limit, rate_limit_reads, rate_limit_writes, credits_available,"
        " credits_reserved, credits_charged FROM accounts WHERE id = ?",
        account_id,
    )
    return row


def _table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich table, as lists of stripped cells."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


# -- credits grant ---------------------------------------------------------------


def test_credits_grant_adds_exact_amounts(server: ServerProcess) -> None:
    """By name and by id, with decimals and a note; the API sees the new balance."""
    account = quick_account(server.data_dir, "grant", credits="1")
    by_name, by_id = _cli_all(
        server.data_dir,
        [
            ["credits", "grant", account.name, "2.5"],
            ["credits", "grant", account.id, "0.001", "--note", "goodwill"],
        ],
    )
    assert (by_name.returncode, by_id.returncode) == (0, 0), _said(by_name) + _said(by_id)
    # The two ran side by side: either may have been first.
    prefix = f"Granted 2.5 credits to {account.name}; available: "
    assert _out(by_name) in {prefix + "3.5.", prefix + "3.501."}
    prefix = f"Granted 0.001 credits to {account.name}; available: "
    assert _out(by_id) in {prefix + "1.001.", prefix + "3.501."}
    grants = sql(
        server.data_dir,
        "SELECT kind, amount, note, task_id FROM ledger WHERE account_id = ? ORDER BY amount",
        account.id,
    )
    assert grants == [
        ("grant", 1, "goodwill", None),
        ("grant", 1000, "initial credits", None),
        ("grant", 2500, None, None),
    ]
    with server.client(account.key) as http:
        usage = get_usage(http)
    assert (usage["balance"], usage["reserved"], usage["charged_total"]) == ("3.501", "0", "0")


#: Arguments after ``credits grant ACCOUNT``, exit code, what the message must say
#: (lower case).
BAD_GRANTS: list[tuple[list[str], int, list[str]]] = [
    (["abc"], 1, ["'abc'", "(invalid_param)"]),
    (["0"], 1, ["positive", "(invalid_param)"]),
    (["--", "-1"], 1, ["positive", "(invalid_param)"]),
    (["1.0001"], 1, ["'1.0001'", "3 decimal places", "(invalid_param)"]),
    (["NaN"], 1, ["'nan'", "(invalid_param)"]),
    (["1e-4"], 1, ["'1e-4'", "3 decimal places", "(invalid_param)"]),
    # Without ``--`` click takes a negative number for an option: still refused.
    (["-1"], 2, ["no such option: -1"]),
]


def test_credits_grant_refuses_bad_amounts_writing_nothing(server: ServerProcess) -> None:
    account = quick_account(server.data_dir, "badgrant", credits="1")
    ledger_before = _ledger_size(server.data_dir)
    row_before = _account_row(server.data_dir, account.id)
    runs = [["credits", "grant", account.name, *args] for args, _, _ in BAD_GRANTS]
    runs.append(["credits", "grant", "no-such-account", "1"])
    results = _cli_all(server.data_dir, runs)

    expected = [(code, says) for _, code, says in BAD_GRANTS]
    expected.append((1, ["'no-such-account'", "(account_not_found)"]))
    for args, result, (code, says) in zip(runs, results, expected, strict=True):
        _assert_refused(args, result, code, says)
    assert _ledger_size(server.data_dir) == ledger_before
    assert _account_row(server.data_dir, account.id) == row_before


def test_credits_grant_writes_nothing_for_an_amount_too_large_to_store(
    server: ServerProcess,
) -> None:
    """1e30 credits do not fit the ledger's 64-bit column: refused, nothing written."""
    account = quick_account(server.data_dir, "huge", credits="1")
    ledger_before = _ledger_size(server.data_dir)
    (result,) = _cli_all(server.data_dir, [["credits", "grant", account.name, "1e30"]])
    assert result.returncode == 1, _said(result)
    assert _ledger_size(server.data_dir) == ledger_before
    assert _account_row(server.data_dir, account.id)[3] == 1000


def test_credits_grant_explains_an_amount_too_large_to_store(data_dir: Path) -> None:
    """1e30 credits: an error line, not a traceback."""
    run_cli(data_dir, "accounts", "create", "huge", "--credits", "1")
    result = run_cli(data_dir, "credits", "grant", "huge", "1e30", check=False, **NARROW)
    _assert_refused(["1e30"], result, 1, ["(invalid_param)"])


MAX_BALANCE = 2**62  # millicredits an account may hold


def test_credits_grant_refuses_to_overflow_a_balance(data_dir: Path) -> None:
    """An account 0.5 credits short of the largest balance (a grant seeded with raw
    SQL, ledger and counter alike): 1 more credit is refused with nothing written,
    0.5 fills it exactly, and the balance stays an exact integer doctor agrees with."""
    made = run_cli(data_dir, "accounts", "create", "rich", "--credits", "1")
    account_id = made.stdout.strip()
    seed = MAX_BALANCE - 500 - 1000
    sql(
        data_dir,
        "INSERT INTO ledger (account_id, task_id, kind, amount, created_at, note)"
        " VALUES (?, NULL, 'grant', ?, 0, 'seed')",
        account_id,
        seed,
    )
    sql(
        data_dir,
        "UPDATE accounts SET credits_available = credits_available + ? WHERE id = ?",
        seed,
        account_id,
    )
    too_much, exactly = _cli_all(
        data_dir, [["credits", "grant", "rich", "1"], ["credits", "grant", "rich", "0.5"]]
    )
    _assert_refused(["1"], too_much, 1, ["(invalid_param)"])
    assert exactly.returncode == 0, _said(exactly)
    assert _out(exactly) == ("Granted 0.5 credits to rich; available: 4611686018427387.904.")
    if postgres_url(data_dir) is None:  # SQLite keeps whatever type it is given
        assert sql(data_dir, "SELECT typeof(credits_available) FROM accounts") == [("integer",)]
    assert sql(data_dir, "SELECT credits_available FROM accounts") == [(MAX_BALANCE,)]
    assert sql(data_dir, "SELECT amount FROM ledger ORDER BY id") == [(1000,), (seed,), (500,)]
    doctor = run_cli(data_dir, "doctor", check=False, **NARROW)
    assert (doctor.returncode, doctor.stdout.strip()) == (0, CONSISTENT), _said(doctor)


# -- credits show ------------------------------------------------------------------


def test_credits_show_prints_available_reserved_and_charged(server: ServerProcess) -> None:
    """After one task charged 1.5 and with one running (2.5 reserved)."""
    account = quick_account(server.data_dir, "show", credits="10")
    with server.client(account.key) as http:
        done = submit(http, "metered", input={"units": 3, "estimate_units": 4})["id"]
        assert wait_status(http, done, TERMINAL)["status"] == "completed"
        running = submit(http, "metered", input={"units": 5, "seconds": 30})["id"]
        wait_status(http, running, {"running"})
        try:
            shown, unknown = _cli_all(
                server.data_dir,
                [["credits", "show", account.name], ["credits", "show", "no-such-account"]],
            )
        finally:
            assert http.post(f"/v1/tasks/{running}/cancel").status_code == 202
        assert wait_status(http, running, TERMINAL)["status"] == "cancelled"

    assert shown.returncode == 0, _said(shown)
    month = datetime.now(UTC).strftime("%Y-%m-01T00:00:00.000000Z")
    assert shown.stdout.splitlines()[:5] == [
        f"account    {account.name} ({account.id})",
        "available  6",
        "reserved   2.5",
        "granted    10",
        f"charged    1.5 since {month}, 1.5 in all",
    ]
    rows = _table_rows(shown.stdout)
    assert [(kind, credits, task) for _, _, kind, credits, task, _ in rows] == [
        ("reserve", "2.5", running),
        ("refund", "0.5", done),
        ("settle", "1.5", done),
        ("reserve", "2", done),
        ("grant", "10", ""),
    ]
    assert rows[-1][5] == "initial credits"
    _assert_refused(["show"], unknown, 1, ["'no-such-account'", "(account_not_found)"])


# -- accounts update -----------------------------------------------------------------


def test_accounts_update_refuses_bad_limits_changing_nothing(server: ServerProcess) -> None:
    """Each bad value is refused, a valid one given with it is not applied either; a
    valid update then shows in ``accounts list`` and ``GET /v1/usage``."""
    account = quick_account(server.data_dir, "limits", credits="1", concurrency=2)
    before = _account_row(server.data_dir, account.id)
    bad: list[tuple[list[str], list[str]]] = [
        (["--concurrency", "0"], ["concurrency", "10000", "(invalid_param)"]),
        (["--concurrency", "10001"], ["concurrency", "10000", "(invalid_param)"]),
        (["--rate-limit-reads", "nonsense"], ["'nonsense'", "(invalid_param)"]),
        # The valid concurrency given with it is not applied either.
        (
            ["--concurrency", "5", "--rate-limit-writes", "0/minute"],
            ["'0/minute'", "(invalid_param)"],
        ),
    ]
    runs = [["accounts", "update", account.name, *args] for args, _ in bad]
    runs.append(["accounts", "update", "no-such-account", "--concurrency", "3"])
    results = _cli_all(server.data_dir, runs)
    expected = [says for _, says in bad]
    expected.append(["'no-such-account'", "(account_not_found)"])
    for args, result, says in zip(runs, results, expected, strict=True):
        _assert_refused(args, result, 1, says)
    assert _account_row(server.data_dir, account.id) == before == (2, None, None, 1000, 0, 0)

    updated = run_cli(
        server.data_dir,
        "accounts",
        "update",
        account.id,
        "--concurrency",
        "3",
        "--rate-limit-reads",
        "120/minute",
        "--rate-limit-writes",
        "unlimited",
    )
    assert _out(updated) == (
        f"{account.name} ({account.id}): concurrency 3, reads 120/minute, writes unlimited"
    )
    listed = run_cli(server.data_dir, "accounts", "list")
    rows = [row for row in _table_rows(listed.stdout) if row[0] == account.id]
    assert rows == [[account.id, account.name, "3", "1", "0", "120/minute", "unlimited"]]
    with server.client(account.key) as http:
        assert get_usage(http)["concurrency_limit"] == 3


# -- doctor --------------------------------------------------------------------------


def test_doctor_is_clean_after_real_work_and_names_a_corrupted_entry(
    server: ServerProcess,
) -> None:
    """Completed (under and over the estimate), failed, and cancelled tasks (one while
    queued, one while running) leave every invariant true; one settle entry raised
    by a millicredit with raw SQL makes doctor exit 1 naming it and its task."""
    account = quick_account(server.data_dir, "doctor", credits="20", concurrency=1)
    with server.client(account.key) as http:
        long = submit(http, "metered", input={"units": 2, "seconds": 30})["id"]
        wait_status(http, long, {"running"})
        queued = submit(http, "metered", input={"units": 1})["id"]
        assert http.post(f"/v1/tasks/{queued}/cancel").status_code == 200
        assert http.post(f"/v1/tasks/{long}/cancel").status_code == 202
        under = submit(http, "metered", input={"units": 3, "estimate_units": 4})["id"]
        over = submit(http, "metered", input={"units": 10, "estimate_units": 2})["id"]
        failed = submit(http, "metered", input={"units": 2, "fail": True})["id"]
        ended = {
            task_id: wait_status(http, task_id, TERMINAL)["status"]
            for task_id in (long, queued, under, over, failed)
        }
        assert ended == {
            long: "cancelled",
            queued: "cancelled",
            under: "completed",
            over: "completed",
            failed: "failed",
        }
        usage = get_usage(http)
        assert (usage["balance"], usage["reserved"], usage["charged_total"]) == ("17.5", "0", "2.5")

    clean = run_cli(server.data_dir, "doctor", check=False, **NARROW)
    assert clean.returncode == 0, _said(clean)
    assert clean.stdout.strip() == CONSISTENT

    entries = sql(
        server.data_dir, "SELECT id, kind FROM ledger WHERE task_id = ? ORDER BY id", under
    )
    assert [kind for _, kind in entries] == ["reserve", "settle", "refund"]
    settle = entries[1][0]
    changed = sql(
        server.data_dir,
        "UPDATE ledger SET amount = amount + 1 WHERE id = ? AND kind = 'settle' RETURNING id",
        settle,
    )
    assert changed == [(settle,)]

    try:
        broken = run_cli(server.data_dir, "doctor", check=False, **NARROW)
    finally:
        # Put it back: the module's other tests see a clean ledger again.
        sql(server.data_dir, "UPDATE ledger SET amount = amount - 1 WHERE id = ?", settle)
    assert broken.returncode == 1, _said(broken)
    assert broken.stderr.strip() == "3 violation(s) found."
    found = _violations(broken)
    ids = ", ".join(str(entry_id) for entry_id, _ in entries)
    on_task = f"VIOLATION {account.id} {under} ledger entries {ids}: "
    on_account = f"VIOLATION {account.id}: "
    assert sorted(line.split(": ", 1)[0] + ": " for line in found) == sorted(
        [on_account, on_task, on_task]
    ), found
    # Each names the amounts: 1500 + 1 charged on the task, 2501 on the account.
    assert [("charged 1501" in line) for line in found if line.startswith(on_task)] == [
        True,
        True,
    ], found
    assert [("charged 2501" in line) for line in found if line.startswith(on_account)] == [True], (
        found
    )

    again = run_cli(server.data_dir, "doctor", check=False, **NARROW)
    assert (again.returncode, again.stdout.strip()) == (0, CONSISTENT), _said(again)


def test_doctor_prints_each_violation_on_one_line(server: ServerProcess) -> None:
    """Run from a pipe (80 columns): every line starts with VIOLATION and holds the
    account id, the task id and the ledger entry ids."""
    account = quick_account(server.data_dir, "oneline", credits="5")
    with server.client(account.key) as http:
        task_id = submit(http, "metered", input={"units": 3, "estimate_units": 4})["id"]
        assert wait_status(http, task_id, TERMINAL)["status"] == "completed"
    entries = sql(server.data_dir, "SELECT id FROM ledger WHERE task_id = ? ORDER BY id", task_id)
    ids = ", ".join(str(entry_id) for (entry_id,) in entries)
    sql(server.data_dir, "UPDATE ledger SET amount = amount + 1 WHERE id = ?", entries[1][0])
    try:
        broken = run_cli(server.data_dir, "doctor", check=False, **NARROW)
    finally:
        sql(server.data_dir, "UPDATE ledger SET amount = amount - 1 WHERE id = ?", entries[1][0])
    assert broken.returncode == 1, _said(broken)
    lines = broken.stdout.splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"VIOLATION {account.id}") for line in lines), lines
    on_task = [line for line in lines if task_id in line]
    assert len(on_task) == 2, lines
    assert all(f"{account.id} {task_id} ledger entries {ids}: " in line for line in on_task), lines
