"""The examples of ``docs/`` run against a real server, each page's blocks in order
in one process (as a reader would paste them): every ```python block of the SDK
pages, and every ```sh block of the CLI page (```shell blocks are shown only)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.acceptance.apitools import quick_account
from tests.helpers import ServerProcess

pytestmark = pytest.mark.acceptance
DOCS = Path(__file__).parents[2] / "docs"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(page: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(page.read_text()) if lang == language]


def _env(server: ServerProcess) -> dict[str, str]:
    account = quick_account(server.data_dir, "docs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    env.update({"TASKGATE_BASE_URL": server.base_url, "TASKGATE_API_KEY": account.key})
    # The `taskgate` command of this interpreter comes first.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _photo(directory: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "navy").save(buffer, format="PNG")
    (directory / "photo.png").write_bytes(buffer.getvalue())


@pytest.mark.parametrize("page", ["client.md", "files.md", "webhooks.md"])
def test_python_examples_run(cli_server: ServerProcess, tmp_path: Path, page: str) -> None:
    found = blocks(DOCS / page, "python")
    assert len(found) >= 4, f"{page} has too few examples"
    script = tmp_path / "example.py"
    script.write_text("\n\n".join(found))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(cli_server),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{page}:\n{done.stdout}\n{done.stderr}"


def test_cli_examples_run(cli_server: ServerProcess, tmp_path: Path) -> None:
    found = blocks(DOCS / "cli.md", "sh")
    assert len(found) >= 4
    _photo(tmp_path)
    script = tmp_path / "example.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(found))
    done = subprocess.run(
        ["bash", str(script)],
        cwd=tmp_path,
        env=_env(cli_server),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"cli.md:\n{done.stdout}\n{done.stderr}"
    # What the examples say they print and save.
    assert (tmp_path / "outputs" / "wait.bin").stat().st_size == 2048
    assert (tmp_path / "copies" / "copy-0.bin").read_bytes() == (
        tmp_path / "photo.png"
    ).read_bytes()
    assert (tmp_path / "downloads" / "photo.png").exists()
    assert "downloads/photo.png" in done.stdout
