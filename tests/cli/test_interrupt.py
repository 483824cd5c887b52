"""Ctrl-C while ``taskgate submit --wait`` follows a task: from a terminal it asks
whether to cancel; from a script it leaves the task running and says how to resume."""

from __future__ import annotations

import os
import pty
import signal

import pytest

from taskgate.client import Client, TaskCancelledError
from tests.acceptance.apitools import TASK_ID
from tests.cli.runner import Cli

pytestmark = pytest.mark.acceptance


def test_without_a_terminal_the_task_goes_on_and_exits_130(cli: Cli, sdk: Client) -> None:
    with cli.start("submit", "wait", "-i", "seconds=30", "--wait") as running:
        running.wait_for_stderr(" running")
        running.process.send_signal(signal.SIGINT)
        done = running.finish()
    assert done.code == 130, done.stderr
    task_id = done.stdout.strip()
    assert TASK_ID.match(task_id), done.stdout
    assert f"Wait for it with: taskgate tasks wait {task_id}" in done.stderr
    assert "Cancel task" not in done.stderr
    task = sdk.tasks.get(task_id)
    assert (task.status, task.cancel_requested_at) == ("running", None)
    # Resuming by id follows the same task; interrupted again, it still goes on.
    with cli.start("tasks", "wait", task_id, "--json") as resumed:
        resumed.wait_for_stderr(f"{task_id} running")
        resumed.process.send_signal(signal.SIGINT)
        done = resumed.finish()
    assert done.code == 130, done.stderr
    assert done.json()["id"] == task_id
    assert sdk.tasks.get(task_id).cancel_requested_at is None
    sdk.tasks.cancel(task_id)


@pytest.mark.parametrize(("answer", "code"), [("y", 3), ("n", 130)])
def test_at_a_terminal_it_asks_whether_to_cancel(
    cli: Cli, sdk: Client, answer: str, code: int
) -> None:
    leader, follower = pty.openpty()
    try:
        with cli.start("submit", "wait", "-i", "seconds=30", "--wait", stdin=follower) as running:
            running.wait_for_stderr(" running")
            running.process.send_signal(signal.SIGINT)
            running.wait_for_stderr("Cancel task task_")
            os.write(leader, f"{answer}\n".encode())
            done = running.finish()
    finally:
        os.close(leader)
        os.close(follower)
    assert done.code == code, done.stderr
    task_id = done.stderr.split("Cancel task ", 1)[1].split("?", 1)[0]
    assert TASK_ID.match(task_id), done.stderr
    if answer == "y":
        assert f"Cancel requested for {task_id}." in done.stderr
        with pytest.raises(TaskCancelledError):
            sdk.tasks.wait(task_id, timeout=20)
    else:
        assert done.stdout.strip() == task_id
        assert sdk.tasks.get(task_id).status == "running"
        sdk.tasks.cancel(task_id)
