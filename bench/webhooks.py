"""Webhook deliveries per second: ``python bench/webhooks.py``.

A receiver on 127.0.0.1 (raw asyncio, answering ``204`` at once) counts the requests
it gets. Two phases, one after the other, to the same receiver:

- **ceiling**: the bench process POSTs N payloads of a delivery's size with httpx,
  as many at once as the deliverer (16): what the receiver and Python's HTTP stack
  take on this machine.
- **taskgate**: N ``wait`` tasks are queued in a fresh data dir whose account has one
  webhook endpoint (``task.created`` events) pointing at the receiver; then
  ``taskgate serve --no-workers`` starts. Its deliverer fans the N events out from
  the outbox into N deliveries and attempts them, each signed per Standard
  Webhooks. Measured from the server's first delivery to the N-th, with the
  latency from each event's ``created_at`` to its arrival beside it (that one
  includes the server's start-up, so only its spread means much).

The report gives deliveries/s of both phases and their ratio. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from procs import HOST, free_port, running, steal_seconds, tail, taskgate_env
from procs import wait_for as wait_until
from taskgate.composition import build
from taskgate.payloads import WorkflowSubmit
from taskgate.settings import Settings
from taskgate.store import migrate

CONCURRENCY = 16


class Receiver:
    """A minimal HTTP/1.1 server in a process of its own (so that it does not share
    the bench's GIL): answers each POST 204 at once and notes its arrival time and
    the event's ``created_at``; ``GET /stats`` gives the count, ``GET /dump`` the
    notes, ``DELETE /`` forgets them."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_receive, args=(self.port,), daemon=True
        )
        self._process.start()
        wait_until(self._up, timeout=20, what="the receiver")
        self._http = httpx.Client(base_url=f"http://{HOST}:{self.port}", timeout=30)

    def _up(self) -> bool:
        try:
            return httpx.get(f"http://{HOST}:{self.port}/stats", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def count(self) -> int:
        return int(self._http.get("/stats").json()["count"])

    def dump(self) -> list[tuple[float, float | None, int]]:
        """(arrival, event created_at, body bytes) of each request."""
        return [tuple(row) for row in self._http.get("/dump").json()]

    def reset(self) -> None:
        self._http.delete("/")

    def close(self) -> None:
        self._http.close()
        self._process.terminate()
        self._process.join(5)


def _receive(port: int) -> None:
    notes: list[tuple[float, float | None, int]] = []

    def created_at(body: bytes) -> float | None:
        try:
            value = json.loads(body)["created_at"]
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, KeyError, TypeError):
            return None

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                if head.startswith(b"POST"):
                    notes.append((time.time(), None, length))
                    notes[-1] = (notes[-1][0], created_at(body), length)
                    answer = b""
                    status = b"204 No Content"
                elif head.startswith(b"GET /stats"):
                    answer, status = json.dumps({"count": len(notes)}).encode(), b"200 OK"
                elif head.startswith(b"GET /dump"):
                    answer, status = json.dumps(notes).encode(), b"200 OK"
                else:
                    notes.clear()
                    answer, status = b"{}", b"200 OK"
                writer.write(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\ncontent-length: "
                    + str(len(answer)).encode()
                    + b"\r\n\r\n"
                    + answer
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, HOST, port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def ceiling(receiver: Receiver, count: int, body: bytes) -> dict[str, Any]:
    """N POSTs of ``body`` from httpx, CONCURRENCY at a time."""
    receiver.reset()
    headers = {
        "content-type": "application/json",
        "webhook-id": "evt_bench",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1," + "A" * 44,
    }

    async def send_all() -> float:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for index in range(count):
                queue.put_nowait(index)

            async def sender() -> None:
                while not queue.empty():
                    queue.get_nowait()
                    response = await client.post(
                        f"http://{HOST}:{receiver.port}/hook", content=body, headers=headers
                    )
                    response.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
            return time.perf_counter() - started

    elapsed = asyncio.run(send_all())
    assert receiver.count == count
    return {"deliveries": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed)}


def make_backlog(data_dir: Path, count: int, url: str) -> None:
    """A data dir with an account, its endpoint for ``task.created`` at ``url``, and
    ``count`` queued tasks (so as many events waiting in the outbox)."""
    data_dir.mkdir()
    settings = Settings(data_dir=data_dir, database_url=None, workflows=[], allow_private_urls=True)
    services = build(settings)
    try:
        migrate.upgrade(services.db)
        account = services.accounts.create_account("bench", credits="1000000", concurrency=64)

        async def setup() -> None:
            await services.webhooks.create(account.id, url=url, enabled_events=["task.created"])
            request = WorkflowSubmit(input={"seconds": 0})
            for start in range(0, count, 1000):
                batch = [request] * min(1000, count - start)
                await services.tasks.submit_many(account.id, "wait", batch)

        asyncio.run(setup())
    finally:
        services.close()


def through_taskgate(receiver: Receiver, count: int, root: Path) -> dict[str, Any]:
    receiver.reset()
    data_dir = root / "data"
    make_backlog(data_dir, count, f"http://{HOST}:{receiver.port}/hook")
    port = free_port()
    log_path = root / "serve.log"
    env = taskgate_env(data_dir, TASKGATE_ALLOW_PRIVATE_URLS="true")
    command = [sys.executable, "-m", "taskgate", "serve", "--port", str(port), "--no-workers"]
    command.append("--no-access-log")
    steal_before = steal_seconds()
    with running(command, log_path=log_path, env=env) as process:
        try:
            wait_until(
                lambda: receiver.count >= count,
                timeout=600,
                what=f"{count} deliveries",
                alive=process,
            )
        except (TimeoutError, RuntimeError):
            print(tail(log_path), file=sys.stderr)
            raise
    notes = receiver.dump()
    arrivals = sorted(arrival for arrival, _created, _size in notes)
    elapsed = arrivals[-1] - arrivals[0]
    latencies = sorted((arrival - created) * 1000 for arrival, created, _ in notes if created)
    return {
        "deliveries": len(arrivals),
        "seconds": round(elapsed, 3),
        "per_second": round((len(arrivals) - 1) / elapsed) if elapsed > 0 else None,
        "latency_ms": {
            "p50": round(latencies[len(latencies) // 2], 1),
            "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
        },
        "steal_seconds": round(steal_seconds() - steal_before, 2),
        "payload_bytes": notes[0][2],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deliveries", type=int, default=5000, help="deliveries per phase")
    args = parser.parse_args(argv)
    receiver = Receiver()
    try:
        with tempfile.TemporaryDirectory(prefix="taskgate-bench-webhooks-") as root:
            print(f"taskgate: {args.deliveries} task.created deliveries…", flush=True)
            measured = through_taskgate(receiver, args.deliveries, Path(root))
            sample = json.dumps({"pad": "x" * (measured["payload_bytes"] or 1500)}).encode()
            print(f"ceiling: {args.deliveries} POSTs from httpx…", flush=True)
            top = ceiling(receiver, args.deliveries, sample)
    finally:
        receiver.close()
    ratio = measured["per_second"] / top["per_second"] if measured["per_second"] else 0.0
    print()
    print(f"ceiling (httpx → receiver, {CONCURRENCY} at once): {top['per_second']:,} req/s")
    print(
        f"taskgate deliverer: {measured['per_second']:,} deliveries/s "
        f"({ratio:.0%} of the ceiling), {measured['payload_bytes']} B payloads"
    )
    print(
        f"  event → receiver latency p50 {measured['latency_ms']['p50']} ms, "
        f"p99 {measured['latency_ms']['p99']} ms (includes the server's start)"
    )
    if measured["steal_seconds"] > 0.5:
        print(f"  (CPU stolen by other guests meanwhile: {measured['steal_seconds']} s)")
    print(json.dumps({"ceiling": top, "taskgate": measured, "ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
