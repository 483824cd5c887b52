"""Driving wrk: a generated Lua script sets the request and reports the results as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_MARKER = "WRK_RESULT "

# wrk calls done() once, after all threads stop; latencies are in microseconds.
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"max_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d}\\n',
    "MARKER", summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
""".replace("MARKER", _MARKER)


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    #: Responses with a status of 400 or more.
    bad_status: int
    #: Socket errors: connect, read, write and timeout.
    socket_errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rate": round(self.rate, 1)}

    def summary(self) -> str:
        errors = ""
        if self.bad_status or self.socket_errors:
            errors = f", {self.bad_status} error statuses, {self.socket_errors} socket errors"
        return (
            f"{self.rate:,.0f} req/s (p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"{self.requests:,} requests in {self.seconds:.1f} s{errors})"
        )


def _lua_string(value: str) -> str:
    """A Lua string literal: for printable ASCII, a JSON string literal is one."""
    if not all(" " <= ch <= "~" for ch in value):
        raise ValueError(f"not printable ASCII: {value!r}")
    return json.dumps(value)


def _script(method: str, body: str | None, headers: dict[str, str]) -> str:
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    lines.extend(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    return "\n".join(lines) + "\n" + _DONE


def run_wrk(
    url: str,
    *,
    connections: int,
    threads: int,
    seconds: float,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
    timeout_seconds: float = 5.0,
) -> WrkResult:
    """Load ``url`` with wrk for ``seconds`` and return what it measured."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as script:
        script.write(_script(method, body, headers or {}))
        script.flush()
        result = subprocess.run(
            [
                binary,
                f"--connections={connections}",
                f"--threads={threads}",
                f"--duration={max(1, round(seconds))}s",
                f"--timeout={max(1, round(timeout_seconds))}s",
                f"--script={Path(script.name)}",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith(_MARKER)), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    data = json.loads(line.removeprefix(_MARKER))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        bad_status=data["status"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
    )
