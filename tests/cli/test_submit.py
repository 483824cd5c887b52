"""``taskgate submit``: building the input, waiting with progress, and the exit code
of every way a task or a request can end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskgate.client import Client
from tests.acceptance.apitools import TASK_ID
from tests.cli.runner import Cli
from tests.helpers import free_port

pytestmark = pytest.mark.acceptance


def test_submit_without_wait_prints_the_id(cli: Cli, sdk: Client) -> None:
    done = cli("submit", "wait", "-i", "seconds=0")
    assert done.code == 0, done.stderr
    task_id = done.stdout.strip()
    assert TASK_ID.match(task_id), done.stdout
    assert f"Submitted {task_id}" in done.stderr
    assert sdk.tasks.wait(task_id, timeout=20).status == "completed"


def test_input_from_json_fields_and_a_file(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "input.json").write_text('{"seconds": 0, "credits": "0.5"}')
    done = cli(
        "submit",
        "metered",
        "--input",
        '{"units": 1, "seconds": 5}',
        # JSON where it parses: a number and a boolean; the last of a repeated key.
        "-i",
        "units=3",
        "--field",
        "fail=false",
        "-i",
        "seconds=0.1",
        "-i",
        "seconds=0",
        "--priority",
        "-3",
        "--json",
    )
    assert done.code == 0, done.stderr
    task = done.json()
    given = {key: task["input"][key] for key in ("units", "fail", "seconds")}
    assert (given, task["priority"]) == ({"units": 3, "fail": False, "seconds": 0}, -3)
    # @FILE reads the input from a file; a quoted JSON value is a string.
    done = cli("submit", "wait", "--input", "@input.json", "-i", 'credits="0.25"', "--json")
    assert done.code == 0, done.stderr
    given = done.json()["input"]
    assert (given["seconds"], given["credits"]) == (0, "0.25")
    # A value that is not JSON is sent as text (which the workflow rejects here).
    done = cli("submit", "wait", "-i", "credits=lots")
    assert done.code == 5, done.stderr
    assert "decimal string" in done.stderr
    assert "(field input.credits)" in done.stderr


def test_wait_shows_progress_and_exits_0_with_the_task(cli: Cli, sdk: Client) -> None:
    done = cli("submit", "wait", "-i", "seconds=0.6", "-i", "steps=3", "--wait", "--json")
    assert done.code == 0, done.stderr
    task = done.json()
    assert (task["object"], task["status"], task["output"][0]["steps"]) == ("task", "completed", 3)
    # Progress goes to stderr: the stage and percent of the running task.
    assert f"{task['id']} running · waiting" in done.stderr
    assert "100%" in done.stderr
    # Without --json, stdout holds the id (there are no output files to list).
    done = cli("submit", "wait", "--wait")
    assert done.code == 0, done.stderr
    assert TASK_ID.match(done.stdout.strip()), done.stdout
    assert sdk.tasks.get(done.stdout.strip()).status == "completed"


def test_a_failed_task_exits_1(cli: Cli) -> None:
    done = cli("submit", "wait", "-i", "fail=true", "--wait", "--json")
    assert done.code == 1, done.stderr
    task = done.json()
    assert (task["status"], task["error"]["code"]) == ("failed", "wait_failed")
    assert "Failed as asked. (wait_failed)" in done.stderr


def test_a_cancelled_task_exits_3(cli: Cli, sdk: Client) -> None:
    task = sdk.tasks.create("wait", {"seconds": 30})
    sdk.tasks.cancel(task.id)
    done = cli("tasks", "wait", task.id, "--json")
    assert done.code == 3, done.stderr
    assert done.json()["status"] == "cancelled"
    assert "was cancelled" in done.stderr


def test_a_wait_that_times_out_exits_4_and_the_task_goes_on(cli: Cli, sdk: Client) -> None:
    done = cli("submit", "wait", "-i", "seconds=30", "--wait", "--timeout", "0.5", "--json")
    assert done.code == 4, done.stderr
    task = done.json()
    assert task["status"] in ("queued", "running")
    assert f"taskgate tasks wait {task['id']}" in done.stderr
    assert sdk.tasks.get(task["id"]).status in ("queued", "running")
    sdk.tasks.cancel(task["id"])


def test_api_errors_exit_5_with_the_code(cli: Cli, sdk: Client) -> None:
    done = cli("submit", "no-such-workflow", "--json")
    assert (done.code, done.stdout) == (5, ""), done.stderr
    assert "[workflow_not_found, HTTP 404] (field workflow)" in done.stderr
    done = cli("submit", "wait", "-i", "seconds=-1")
    assert done.code == 5, done.stderr
    assert "[invalid_param, HTTP 422] (field input.seconds)" in done.stderr
    done = cli("submit", "wait", "-i", 'credits="1000"')
    assert done.code == 5, done.stderr
    assert "insufficient_credits, HTTP 402" in done.stderr
    # A bad key, by option (it wins over the environment).
    done = cli("submit", "wait", "--api-key", "tg_live_" + "x" * 38)
    assert done.code == 5, done.stderr
    assert "invalid_api_key, HTTP 401" in done.stderr
    assert list(sdk.tasks.list()) == []


def test_an_unreachable_server_exits_5(cli: Cli) -> None:
    # The option wins over TASKGATE_BASE_URL, which names the live server here.
    url = f"http://127.0.0.1:{free_port()}"
    done = cli("usage", "--base-url", url)
    assert done.code == 5, done.stderr
    assert f"cannot reach {url}" in done.stderr


def test_json_output_is_the_api_object_alone(cli: Cli) -> None:
    done = cli("submit", "wait", "--json")
    assert done.code == 0, done.stderr
    assert set(json.loads(done.stdout)) >= {"id", "object", "status", "input", "billing"}
