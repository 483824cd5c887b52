"""``taskgate tasks``, ``workflows``, ``usage`` and ``files``, and ``submit --wait``
downloading outputs: each against the real server, human and ``--json`` output."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from taskgate.client import Client
from tests.acceptance.apitools import Account
from tests.cli.runner import Cli

pytestmark = pytest.mark.acceptance
UNKNOWN_TASK = "task_01J0000000000000000000000Z"


def png(path: Path, colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def test_tasks_get_list_and_cancel(cli: Cli, sdk: Client) -> None:
    first = sdk.tasks.create("wait", {"seconds": 0})
    sdk.tasks.wait(first.id, timeout=20)
    second = sdk.tasks.create("wait", {"seconds": 30})

    done = cli("tasks", "get", first.id, "--json")
    assert done.code == 0, done.stderr
    assert (done.json()["id"], done.json()["status"]) == (first.id, "completed")
    done = cli("tasks", "get", first.id)
    assert done.code == 0, done.stderr
    lines = dict(line.split(None, 1) for line in done.stdout.splitlines())
    assert (lines["id"], lines["status"], lines["workflow"]) == (first.id, "completed", "wait 1")

    done = cli("tasks", "list", "--limit", "1", "--json")
    assert done.code == 0, done.stderr
    assert [task["id"] for task in done.json()] == [second.id]
    done = cli("tasks", "list", "--workflow", "wait", "--status", "queued", "--status", "running")
    assert done.code == 0, done.stderr
    assert second.id in done.stdout and first.id not in done.stdout

    done = cli("tasks", "cancel", second.id, "--json")
    assert done.code == 0, done.stderr
    assert done.json()["id"] == second.id
    assert sdk.tasks.get(second.id).cancel_requested_at is not None
    # A task that has ended cannot be cancelled; an unknown one is not found.
    done = cli("tasks", "cancel", first.id)
    assert done.code == 5, done.stderr
    assert "task_not_cancellable, HTTP 409" in done.stderr
    done = cli("tasks", "get", UNKNOWN_TASK, "--json")
    assert (done.code, done.stdout) == (5, "")
    assert "task_not_found, HTTP 404" in done.stderr


def test_workflows_and_usage(cli: Cli, account: Account) -> None:
    done = cli("workflows", "--json")
    assert done.code == 0, done.stderr
    names = [flow["name"] for flow in done.json()]
    assert {"wait", "metered", "probe"} <= set(names)
    done = cli("workflows", "wait", "--json")
    assert (done.json()["name"], done.json()["object"]) == ("wait", "workflow")
    done = cli("workflows", "no-such-flow")
    assert done.code == 5, done.stderr
    assert "workflow_not_found, HTTP 404" in done.stderr

    done = cli("usage", "--json")
    assert done.code == 0, done.stderr
    usage = done.json()
    assert (usage["object"], usage["account_id"], usage["balance"]) == ("usage", account.id, "100")
    done = cli("usage")
    assert f"account      {account.id}" in done.stdout
    assert "balance      100" in done.stdout


def test_submit_uploads_files_waits_and_downloads_the_outputs(
    cli: Cli, sdk: Client, tmp_path: Path
) -> None:
    red = png(tmp_path / "red.png", "red")
    green = png(tmp_path / "green.png", "green")
    blue = png(tmp_path / "blue.png", "blue")
    done = cli(
        "submit",
        "copy-files",
        "--file",
        "source=red.png",
        "--file",
        "extra=green.png",
        "--file",
        "extra=blue.png",
        "--wait",
        "--out",
        "outputs",
    )
    assert done.code == 0, done.stderr
    saved = [Path(line) for line in done.stdout.splitlines()]
    assert [path.name for path in saved] == ["copy-0.bin", "copy-1.bin", "copy-2.bin"]
    assert [(tmp_path / path).read_bytes() for path in saved] == [red, green, blue]
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == [p.name for p in saved]
    # The input held the uploaded files' ids: one in source, a list in extra.
    task = next(iter(sdk.tasks.list()))
    assert task.status == "completed"
    source = sdk.files.get(task.input["source"])
    assert (source.filename, source.sha256) == ("red.png", hashlib.sha256(red).hexdigest())
    assert [sdk.files.get(i).filename for i in task.input["extra"]] == ["green.png", "blue.png"]

    # --json: the task alone on stdout; --no-download leaves the outputs.
    done = cli("tasks", "wait", task.id, "--json", "--no-download", "--out", "none")
    assert done.code == 0, done.stderr
    assert done.json()["id"] == task.id
    assert not (tmp_path / "none").exists()


def test_submit_puts_one_file_of_a_list_field_in_a_list(
    cli: Cli, sdk: Client, tmp_path: Path
) -> None:
    png(tmp_path / "red.png", "red")
    png(tmp_path / "green.png", "green")
    done = cli("submit", "copy-files", "--file", "source=red.png", "--file", "extra=green.png")
    assert done.code == 0, done.stderr
    task = sdk.tasks.get(done.stdout.strip())
    assert isinstance(task.input["source"], str)
    assert [sdk.files.get(i).filename for i in task.input["extra"]] == ["green.png"]

    # An unknown workflow is refused before anything is uploaded.
    def uploads() -> list[str]:
        return [f.id for f in sdk.files.list() if f.purpose != "output"]

    before = uploads()
    done = cli("submit", "no-such-workflow", "--file", "source=red.png")
    assert done.code != 0
    assert "workflow_not_found" in done.stderr
    assert uploads() == before


def test_files_upload_and_download(cli: Cli, sdk: Client, tmp_path: Path) -> None:
    red = png(tmp_path / "red.png", "red")
    done = cli("files", "upload", "red.png")
    assert done.code == 0, done.stderr
    file_id = done.stdout.strip()
    assert file_id.startswith("file_"), done.stdout
    done = cli("files", "upload", str(tmp_path / "red.png"), "--json")
    assert done.code == 0, done.stderr
    described = done.json()
    assert (described["object"], described["filename"], described["bytes"]) == (
        "file",
        "red.png",
        len(red),
    )

    (tmp_path / "down").mkdir()
    done = cli("files", "download", file_id, "--out", "down")
    assert done.code == 0, done.stderr
    assert Path(done.stdout.strip()) == Path("down/red.png")
    assert (tmp_path / "down" / "red.png").read_bytes() == red
    done = cli("files", "download", file_id, "--out", "copy.png", "--json")
    assert done.code == 0, done.stderr
    assert done.json()["id"] == file_id
    assert (tmp_path / "copy.png").read_bytes() == red

    # Bytes of no accepted type; an unknown id.
    (tmp_path / "notes.txt").write_text("plain text")
    done = cli("files", "upload", "notes.txt")
    assert done.code == 5, done.stderr
    assert "unsupported_media_type, HTTP 415" in done.stderr
    done = cli("files", "download", "file_01J0000000000000000000000Z")
    assert done.code == 5, done.stderr
    assert "file_not_found, HTTP 404" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
