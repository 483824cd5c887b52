"""What a ``taskgate`` process loads before it runs its command.

An operator's command (serve, worker, migrate, accounts, keys, credits, doctor)
starts without the client commands and the client SDK; accounts, keys, credits
and doctor also start without the serving machinery (workflows and their media
libraries, storage, the channel). The client commands load the SDK. Each case
runs ``python -m taskgate`` in a fresh interpreter and lists the modules loaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import test_env as process_env

PROBE = """
import runpy, sys
sys.argv = ["taskgate", *sys.argv[1:]]
try:
    runpy.run_module("taskgate", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
print("MODULES", " ".join(sorted(sys.modules)))
"""

CLIENT = "taskgate.client"
SERVING = ("taskgate.workflows.registry", "taskgate.services.storage", "numpy", "av")


def loaded(data_dir: Path, *args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        env=process_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODULES "))
    return set(line.split()[1:])


@pytest.mark.parametrize(
    "args",
    [
        ("accounts", "list"),
        ("keys", "--help"),
        ("credits", "--help"),
        ("doctor",),
    ],
)
def test_operator_commands_load_neither_the_client_nor_the_serving_machinery(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    modules = loaded(tmp_path / "data", *args)
    assert "taskgate.composition" in modules or args[-1] == "--help"
    assert CLIENT not in modules
    assert not [name for name in SERVING if name in modules]


@pytest.mark.parametrize("args", [("serve", "--help"), ("worker", "--help"), ("migrate",)])
def test_serving_commands_start_without_the_client(tmp_path: Path, args: tuple[str, ...]) -> None:
    assert CLIENT not in loaded(tmp_path / "data", *args)


@pytest.mark.parametrize("args", [("--help",), ("workflows", "--help"), ("tasks", "--help")])
def test_client_commands_are_there_when_asked_for(tmp_path: Path, args: tuple[str, ...]) -> None:
    assert CLIENT in loaded(tmp_path / "data", *args)
