"""Running ``taskgate`` client commands in a subprocess, as a user would: to the end,
or in the background to interrupt it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.helpers import test_env, wait_until


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """stdout as JSON: it must hold the API object and nothing else."""
        return json.loads(self.stdout)


class Background:
    """A command running in the background; its stderr is collected as it comes."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._stderr = bytearray()
        self._lock = threading.Lock()
        assert process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            while chunk := os.read(stream.fileno(), 4096):
                with self._lock:
                    self._stderr.extend(chunk)
        except (OSError, ValueError):
            return  # closed by close()

    @property
    def stderr(self) -> str:
        with self._lock:
            return self._stderr.decode(errors="replace")

    def wait_for_stderr(self, text: str, timeout: float = 20) -> None:
        def shown() -> bool:
            if self.process.poll() is not None and text not in self.stderr:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.stderr}")
            return text in self.stderr

        wait_until(shown, timeout=timeout, interval=0.02, message=f"{text!r} on stderr")

    def finish(self, timeout: float = 30) -> Result:
        """Wait for the command to exit; its exit code and whole output."""
        assert self.process.stdout is not None
        # (Not communicate(): it would read stderr too, racing the reader thread.)
        stdout = self.process.stdout.read()
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        self.close()
        return Result(self.process.returncode, stdout.decode(), self.stderr)

    def close(self) -> None:
        """Kill the command if it still runs, and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Cli:
    """``taskgate`` against one server and key, run in ``cwd``."""

    base_url: str
    api_key: str
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = test_env(self.cwd / "unused-data")
        del env["TASKGATE_DATA_DIR"]
        env.update({"TASKGATE_BASE_URL": self.base_url, "TASKGATE_API_KEY": self.api_key})
        env.update(self.env)
        env.update(extra)
        env["COLUMNS"] = "200"
        return env

    def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 60, **env: str
    ) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "taskgate", *args],
            env=self._env(env),
            cwd=self.cwd,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def start(self, *args: str, stdin: int | None = subprocess.DEVNULL, **env: str) -> Background:
        """Start a command; ``stdin`` is a file descriptor (default: none, as in a
        script)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "taskgate", *args],
            env=self._env(env),
            cwd=self.cwd,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return Background(process)
