"""The SSRF guard against a real HTTP server on 127.0.0.1: a name that resolved to a
public address when the URL was saved and resolves to 127.0.0.1 at delivery (DNS
rebinding) never gets a connection; with ``allow_private`` the same request arrives;
redirects come back as they are.

No traffic leaves the machine: names are answered by a scripted resolver, and the TCP
backend under the guard fails the test on any connect to a non-loopback address.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from ipaddress import ip_address

import httpcore
import pytest

from taskgate.services.netguard import (
    BlockedAddress,
    check_url,
    delivery_error_code,
    guarded_client,
)

PUBLIC = "93.184.216.34"  # what hooks.example.com "was" when the URL was saved


class ScriptedResolver:
    """Answers each call with the next scripted list; records what it was asked."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self._answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        assert self._answers, f"unexpected resolution of {host}"
        return self._answers.pop(0)


class LoopbackOnly(httpcore.AsyncNetworkBackend):
    """httpcore's real backend, refusing (loudly) to connect anywhere but loopback."""

    def __init__(self) -> None:
        self._real = httpcore.AnyIOBackend()
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if not ip_address(host).is_loopback:
            pytest.fail(f"the guard let a connection to {host}:{port} through")
        return await self._real.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class HookServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 that counts the connections it accepts.
    ``/redirect`` answers 302 to the cloud metadata address; anything else 200."""

    def __init__(self) -> None:
        self.accepted = 0
        self.hosts: list[str] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines if line)
        self.hosts.append(headers["Host"])
        if request_line.split(" ")[1] == "/redirect":
            writer.write(
                b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@asynccontextmanager
async def hook_server() -> AsyncIterator[HookServer]:
    hooks = HookServer()
    server = await asyncio.start_server(hooks.handle, "127.0.0.1", 0)
    hooks.port = server.sockets[0].getsockname()[1]
    try:
        yield hooks
    finally:
        server.close()
        await server.wait_closed()


def test_dns_rebinding_to_loopback_is_blocked_at_connect_time() -> None:
    async def scenario() -> None:
        async with hook_server() as hooks:
            url = f"http://hooks.example.com:{hooks.port}/in"
            resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])
            assert await check_url(url, allow_private=False, resolve=resolver) == url

            tcp = LoopbackOnly()
            client = guarded_client(allow_private=False, timeout=5.0, resolve=resolver, backend=tcp)
            async with client:
                with pytest.raises(BlockedAddress) as caught:
                    await client.post(url, json={"type": "task.completed"})

            assert caught.value.host == "hooks.example.com"
            assert caught.value.address == "127.0.0.1"
            assert caught.value.reason == "loopback (RFC 1122)"
            assert delivery_error_code(caught.value) == "blocked_address"
            assert resolver.calls == [("hooks.example.com", hooks.port)] * 2
            assert tcp.connects == []
            assert hooks.accepted == 0

            # The server does count connections: the same request, allowed, is one.
            allowed = guarded_client(
                allow_private=True, timeout=5.0, resolve=ScriptedResolver(["127.0.0.1"])
            )
            async with allowed:
                assert (await allowed.get(url)).status_code == 200
            assert hooks.accepted == 1

    asyncio.run(scenario())


def test_allow_private_reaches_the_local_server_with_the_original_host() -> None:
    async def scenario() -> None:
        async with hook_server() as hooks:
            url = f"http://hooks.example.com:{hooks.port}/in"
            resolver = ScriptedResolver([PUBLIC], ["127.0.0.1"])
            assert await check_url(url, allow_private=False, resolve=resolver) == url

            tcp = LoopbackOnly()
            client = guarded_client(allow_private=True, timeout=5.0, resolve=resolver, backend=tcp)
            async with client:
                response = await client.post(url, json={"type": "task.completed"})

            assert response.status_code == 200
            assert response.text == "ok"
            assert tcp.connects == [("127.0.0.1", hooks.port)]
            assert hooks.accepted == 1
            assert hooks.hosts == [f"hooks.example.com:{hooks.port}"]

    asyncio.run(scenario())


def test_redirects_are_returned_not_followed() -> None:
    async def scenario() -> None:
        async with hook_server() as hooks:
            tcp = LoopbackOnly()
            client = guarded_client(
                allow_private=True,
                timeout=5.0,
                resolve=ScriptedResolver(["127.0.0.1"]),
                backend=tcp,
            )
            async with client:
                response = await client.post(
                    f"http://hooks.example.com:{hooks.port}/redirect", content=b"{}"
                )

            assert response.status_code == 302
            assert response.headers["Location"] == "http://169.254.169.254/latest/meta-data/"
            assert response.next_request is not None  # httpx would follow it if asked
            assert tcp.connects == [("127.0.0.1", hooks.port)]
            assert hooks.accepted == 1

    asyncio.run(scenario())


def test_a_loopback_literal_is_blocked_without_resolving() -> None:
    async def scenario() -> None:
        async with hook_server() as hooks:
            tcp = LoopbackOnly()
            client = guarded_client(
                allow_private=False, timeout=5.0, resolve=ScriptedResolver(), backend=tcp
            )
            async with client:
                with pytest.raises(BlockedAddress, match="loopback"):
                    await client.get(f"http://127.0.0.1:{hooks.port}/in")
            assert tcp.connects == []
            assert hooks.accepted == 0

    asyncio.run(scenario())
