"""Bad options and arguments of the client commands: exit 2 with the reason, before
any request (the commands run in this process: no server is involved)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from taskgate.cli.main import full_app

# Nothing listens on port 9 of the loopback: a request would exit 5, not 2.
ENV = {"TASKGATE_BASE_URL": "http://127.0.0.1:9", "TASKGATE_API_KEY": "", "COLUMNS": "300"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "wait", "--input", "{nope"], "not valid JSON"),
        (["submit", "wait", "--input", "[1, 2]"], "must be a JSON object, not list"),
        (["submit", "wait", "--input", "@missing.json"], "cannot read missing.json"),
        (["submit", "wait", "-i", "seconds"], "expected key=value, got 'seconds'"),
        (["submit", "wait", "-i", "=3"], "expected key=value"),
        (["submit", "wait", "--file", "image"], "expected field=PATH"),
        (["submit", "wait", "--file", "image=missing.png"], "no such file: missing.png"),
        (["submit", "wait", "--wait", "--timeout", "0"], "must be more than 0 seconds"),
        (["submit", "wait", "--timeout", "soon"], "Invalid value for '--timeout'"),
        (["submit", "wait", "--priority", "11"], "less than or equal to 10"),
        (["submit", "wait", "--priority", "-11"], "greater than or equal to -10"),
        (["submit", "wait", "--no-such-option"], "No such option"),
        (["submit"], "Missing argument"),
        (["tasks", "get"], "Missing argument"),
        (["tasks", "list", "--limit", "0"], "greater than or equal to 1"),
        (["tasks", "list", "--limit", "many"], "unable to parse string as an integer"),
        (["tasks", "wait", "task_x", "--timeout", "-1"], "must be more than 0 seconds"),
        (["tasks", "cancel"], "Missing argument"),
        (["tasks", "nope"], "No such command"),
        (["workflows", "wait", "extra"], "Got unexpected extra argument"),
        (["usage", "extra"], "Got unexpected extra argument"),
        (["files", "upload", "missing.png"], "does not exist"),
        (["files", "upload", "."], "is a directory"),
        (["files", "download"], "Missing argument"),
        (["files", "download", "file_x", "--out", "no/such/dir/a.bin"], "no such directory"),
    ],
)
def test_bad_usage_exits_2(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(full_app(), args, env=ENV)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in " ".join(result.stderr.split()), result.stderr
    assert result.stdout == ""
