"""The SSRF guard without the network: the blocklist address by address, URL checks
at save time with a scripted resolver, and the connect-time backend over a fake one.

Nothing here sends a packet or asks a real resolver: literals are checked without
resolving, and the resolvers and TCP backends are in-memory fakes.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import httpcore
import httpx
import pytest

from taskgate.core.errors import InvalidInput
from taskgate.services.netguard import (
    BLOCKED_ADDRESS,
    BLOCKLIST,
    BlockedAddress,
    GuardedBackend,
    blocked_reason,
    check_url,
    delivery_error_code,
    host_address,
)


class ScriptedResolver:
    """Answers each call with the next scripted list (an OSError is raised instead);
    records what it was asked. A call past the script fails the test."""

    def __init__(self, *answers: Sequence[str] | OSError) -> None:
        self._answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        assert self._answers, f"unexpected resolution of {host}"
        answer = self._answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer


async def no_resolver(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"{host} must not be resolved")


# -- the blocklist ------------------------------------------------------------

# A Teredo address (RFC 4380 layout): server 65.54.227.120, client stored XOR ones.
TEREDO_CLIENT_LOOPBACK = "2001:0:4136:e378:8000:63bf:80ff:fffe"  # client 127.0.0.1
TEREDO_SERVER_LOOPBACK = "2001:0:7f00:1:8000:63bf:f7f7:f7f7"  # server 127.0.0.1
TEREDO_PUBLIC = "2001:0:4136:e378:8000:63bf:f7f7:f7f7"  # client 8.8.8.8

BLOCKED: list[tuple[str, str]] = [
    # IPv4: an address inside each network and its edges.
    ("0.0.0.0", "this network"),
    ("0.255.255.255", "this network"),
    ("10.0.0.0", "private-use"),
    ("10.1.2.3", "private-use"),
    ("10.255.255.255", "private-use"),
    ("100.64.0.0", "carrier-grade NAT"),
    ("100.127.255.255", "carrier-grade NAT"),
    ("100.100.100.200", "Alibaba"),
    ("127.0.0.0", "loopback"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.255", "loopback"),
    ("169.254.0.0", "link-local"),
    ("169.254.255.255", "link-local"),
    ("169.254.169.254", "cloud metadata (AWS"),
    ("169.254.170.2", "ECS"),
    ("168.63.129.16", "Azure"),
    ("172.16.0.0", "private-use"),
    ("172.31.255.255", "private-use"),
    ("192.0.0.0", "IETF protocol assignments"),
    ("192.0.0.9", "IETF protocol assignments"),  # PCP anycast: "global" to ipaddress
    ("192.0.0.10", "IETF protocol assignments"),  # TURN anycast: "global" to ipaddress
    ("192.0.0.255", "IETF protocol assignments"),
    ("192.0.0.192", "Oracle"),
    ("192.0.2.0", "TEST-NET-1"),
    ("192.0.2.255", "TEST-NET-1"),
    ("192.88.99.0", "6to4 relay"),
    ("192.88.99.255", "6to4 relay"),
    ("192.168.0.0", "private-use"),
    ("192.168.1.1", "private-use"),
    ("192.168.255.255", "private-use"),
    ("198.18.0.0", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.0", "TEST-NET-2"),
    ("198.51.100.255", "TEST-NET-2"),
    ("203.0.113.0", "TEST-NET-3"),
    ("203.0.113.255", "TEST-NET-3"),
    ("224.0.0.0", "multicast"),
    ("239.255.255.255", "multicast"),
    ("240.0.0.0", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "limited broadcast"),
    # IPv6.
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::7f00:1", "IPv4-compatible"),
    ("::ffff:ffff", "IPv4-compatible"),
    ("::ffff:127.0.0.1", "loopback (RFC 1122), embedded as 127.0.0.1 (IPv4-mapped)"),
    ("::ffff:10.1.2.3", "private-use (RFC 1918), embedded as 10.1.2.3 (IPv4-mapped)"),
    ("::ffff:169.254.169.254", "cloud metadata (AWS"),
    ("::ffff:0.0.0.0", "this network"),
    ("::ffff:0:7f00:1", "loopback (RFC 1122), embedded as 127.0.0.1 (IPv4-translated)"),
    ("64:ff9b::a00:1", "private-use (RFC 1918), embedded as 10.0.0.1 (NAT64)"),
    ("64:ff9b::7f00:1", "loopback (RFC 1122), embedded as 127.0.0.1 (NAT64)"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata (AWS"),
    ("64:ff9b::1:0:0", "outside IPv6 global unicast"),  # in 64:ff9b::/32, not the /96
    ("64:ff9b:1::", "local-use NAT64"),
    ("64:ff9b:1::808:808", "local-use NAT64"),
    ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "local-use NAT64"),
    ("100::", "discard-only"),
    ("100::ffff:ffff:ffff:ffff", "discard-only"),
    ("100:0:0:1::1", "dummy prefix"),
    ("2001::", "Teredo"),
    (TEREDO_CLIENT_LOOPBACK, "loopback (RFC 1122), embedded as 127.0.0.1 (Teredo)"),
    (TEREDO_SERVER_LOOPBACK, "loopback (RFC 1122), embedded as 127.0.0.1 (Teredo)"),
    (TEREDO_PUBLIC, "Teredo tunnelling"),
    ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", "Teredo"),
    ("2001:1::1", "IETF protocol assignments"),  # PCP anycast
    ("2001:2::1", "IETF protocol assignments"),  # benchmarking
    ("2001:10::1", "IETF protocol assignments"),  # ORCHID
    ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "IETF protocol assignments"),
    ("2001:db8::", "documentation (RFC 3849)"),
    ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "documentation (RFC 3849)"),
    ("2002:7f00:1::", "loopback (RFC 1122), embedded as 127.0.0.1 (6to4)"),
    ("2002:a00:1::1", "private-use (RFC 1918), embedded as 10.0.0.1 (6to4)"),
    ("2002:a9fe:a9fe::", "cloud metadata (AWS"),
    ("3fff::", "documentation (RFC 9637)"),
    ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "documentation (RFC 9637)"),
    ("5f00::1", "segment routing"),
    ("fc00::", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique local"),
    ("fd00:ec2::254", "cloud metadata (AWS IPv6)"),
    ("fe80::", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"),
    ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "outside IPv6 global unicast"),
    ("4000::1", "outside IPv6 global unicast"),  # unallocated; "global" to ipaddress
    ("8000::1", "outside IPv6 global unicast"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    # The neighbours of the blocked IPv4 networks.
    "1.0.0.0",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "168.63.129.15",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "191.255.255.255",
    "192.0.1.0",
    "192.0.3.0",
    "192.88.98.255",
    "192.88.100.0",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "198.51.99.255",
    "198.51.101.0",
    "203.0.112.255",
    "203.0.114.0",
    "223.255.255.255",
    # IPv6, and embedded forms of public IPv4 addresses.
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2001:200::1",
    "2001:db7:ffff::1",
    "2001:db9::1",
    "3fff:1000::1",
    "2a00:1450:4001::1",
    "::ffff:8.8.8.8",
    "::ffff:0:808:808",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_blocked_addresses(address: str, reason: str) -> None:
    found = blocked_reason(address)
    assert found is not None, address
    assert reason in found


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address) is None


@pytest.mark.parametrize(
    "network", [network for network, _ in BLOCKLIST], ids=[str(n) for n, _ in BLOCKLIST]
)
def test_both_edges_of_every_listed_network_are_blocked(
    network: IPv4Network | IPv6Network,
) -> None:
    assert blocked_reason(network.network_address) is not None
    assert blocked_reason(network.broadcast_address) is not None


def test_the_most_specific_entry_names_the_reason() -> None:
    assert blocked_reason("169.254.169.254") == (
        "cloud metadata (AWS, GCP, Azure, OpenStack, Oracle, …)"
    )
    assert blocked_reason("169.254.1.1") == (
        "link-local (RFC 3927), home of most cloud metadata services"
    )
    assert blocked_reason(IPv6Address("::1")) == "loopback (RFC 4291)"
    assert blocked_reason(IPv4Address("100.100.100.200")) == "cloud metadata (Alibaba Cloud)"


def test_a_name_is_not_an_address() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        blocked_reason("example.com")


# -- hosts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", ip_address("127.0.0.1")),
        ("::ffff:127.0.0.1", ip_address("::ffff:127.0.0.1")),
        ("example.com", None),
        ("example.com.", None),
        ("xn--bcher-kva.example", None),
        ("a_b.example.com", None),
        ("0x7f.example.com", None),
    ],
)
def test_host_address(host: str, address: object) -> None:
    assert host_address(host) == address


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "127.1",
        "0177.0.0.1",
        "127.0.0.01",
        "127.0.0.1.",
        "1.2.3.4.5",
        "example.123",
        "example.0x",
        "fe80::1%25eth0",
        "a..b",
        ".a",
        "ex%41mple.com",
        "exa%20mple.com",
        "-a.example.com",
        "a" * 64 + ".example.com",
    ],
)
def test_hosts_refused(host: str) -> None:
    with pytest.raises(ValueError, match=r"is not|zone ids"):
        host_address(host)


# -- check_url ----------------------------------------------------------------


def check(url: str, *, allow_private: bool = False, resolve: ScriptedResolver | None = None) -> str:
    return asyncio.run(
        check_url(url, allow_private=allow_private, resolve=resolve or no_resolver, param="hook")
    )


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("//example.com/hook", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("http://", "no host"),
        ("http:///hook", "no host"),
        ("https:", "no host"),
        ("http://user:secret@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http://example.com\\@evil.example/", "credentials"),
        ("http://example.com:0/", "Port 0"),
        ("http://example.com:65536/", "Port 65536"),
        ("http://example.com:abc/", "not a valid URL"),
        ("http://[::1/", "not a valid URL"),
        ("http://2130706433/", "dotted-decimal"),
        ("http://0x7f000001/", "dotted-decimal"),
        ("http://0x7f.1/", "dotted-decimal"),
        ("http://127.1/", "dotted-decimal"),
        ("http://0177.0.0.1/", "not a valid URL"),
        ("http://[fe80::1%25eth0]/", "zone ids"),
        ("http://exa mple.com/", "not a valid host name"),
        ("http://%31%32%37.0.0.1/", "dotted-decimal"),
        ("http://ex%41mple.com/", "not a valid host name"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str, allow_private: bool) -> None:
    with pytest.raises(InvalidInput, match=message) as caught:
        check(url, allow_private=allow_private)
    assert caught.value.status == 422
    assert caught.value.code == "invalid_param"
    assert caught.value.param == "hook"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:7f00:1]/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://100.100.100.200/", "cloud metadata"),
        ("http://10.0.0.1/", "private-use"),
        ("http://0.0.0.0/", "this network"),
        ("https://[64:ff9b::a00:1]/", "NAT64"),
        ("http://localhost/", "loopback"),
        ("http://api.localhost:9000/", "loopback"),
    ],
)
def test_blocked_literals_are_refused_without_resolving(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as caught:
        check(url)
    assert caught.value.details is not None
    assert reason in caught.value.details["reason"]


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["10.0.0.5"], "private-use"),
        (["169.254.169.254"], "cloud metadata"),
        (["::1"], "loopback"),
        (["93.184.216.34", "127.0.0.1"], "loopback"),
        (["2606:4700:4700::1111", "fd00::1"], "unique local"),
    ],
)
def test_names_resolving_to_a_blocked_address_are_refused(answers: list[str], reason: str) -> None:
    resolver = ScriptedResolver(answers)
    with pytest.raises(InvalidInput, match=reason) as caught:
        check("https://hooks.example.com/in", resolve=resolver)
    assert resolver.calls == [("hooks.example.com", 443)]
    assert caught.value.details is not None
    assert caught.value.details["host"] == "hooks.example.com"
    assert caught.value.details["address"] in answers
    assert "hooks.example.com resolves to" in caught.value.message


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "does not resolve"),
        ([], "has no address"),
    ],
)
def test_names_that_do_not_resolve_are_refused(answer: list[str] | OSError, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check("https://nowhere.example.com/", resolve=ScriptedResolver(answer))


def test_public_urls_pass_normalised() -> None:
    resolver = ScriptedResolver(["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
    assert check("HTTPS://Hooks.Example.COM:8443/In?x=1", resolve=resolver) == (
        "https://hooks.example.com:8443/In?x=1"
    )
    assert resolver.calls == [("hooks.example.com", 8443)]
    resolver = ScriptedResolver(["93.184.216.34"])
    assert check("http://bücher.example/", resolve=resolver) == "http://xn--bcher-kva.example/"
    assert resolver.calls == [("xn--bcher-kva.example", 80)]
    assert check("http://8.8.8.8/hook") == "http://8.8.8.8/hook"
    assert check("https://[2606:4700:4700::1111]/") == "https://[2606:4700:4700::1111]/"


def test_allow_private_keeps_only_the_form_checks() -> None:
    assert check("http://127.0.0.1:8000/hook", allow_private=True) == ("http://127.0.0.1:8000/hook")
    assert check("http://localhost/", allow_private=True) == "http://localhost/"
    # Names are not resolved at all.
    assert check("http://internal.example/", allow_private=True) == "http://internal.example/"


# -- delivery error codes ---------------------------------------------------------


def test_delivery_error_codes() -> None:
    blocked = BlockedAddress("hooks.example.com", "127.0.0.1", "loopback (RFC 1122)")
    assert str(blocked) == "hooks.example.com resolves to 127.0.0.1, which is loopback (RFC 1122)"
    assert delivery_error_code(blocked) == BLOCKED_ADDRESS == "blocked_address"
    wrapped = httpx.ConnectError("wrapped")
    wrapped.__cause__ = blocked
    assert delivery_error_code(wrapped) == "blocked_address"
    assert delivery_error_code(httpx.ConnectTimeout("slow")) == "timeout"
    assert delivery_error_code(httpx.ConnectError("refused")) == "connection_error"
    assert delivery_error_code(ValueError("other")) is None


# -- the connect-time backend, over a fake TCP backend ---------------------------


class FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, address: str) -> None:
        self.address = address


class FakeTcp(httpcore.AsyncNetworkBackend):
    """Records connects; refuses the addresses it is told to."""

    def __init__(self, refuse: Iterable[str] = ()) -> None:
        self.refuse = set(refuse)
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
        if host in self.refuse:
            raise httpcore.ConnectError(f"{host} refused")
        return FakeStream(host)


def connect(backend: GuardedBackend, host: str, port: int = 443) -> httpcore.AsyncNetworkStream:
    return asyncio.run(backend.connect_tcp(host, port, timeout=5.0))


def test_backend_connects_to_the_resolved_address_not_the_name() -> None:
    tcp = FakeTcp(refuse={"2606:4700:4700::1111"})
    resolver = ScriptedResolver(["2606:4700:4700::1111", "93.184.216.34"])
    backend = GuardedBackend(allow_private=False, resolve=resolver, backend=tcp)
    stream = connect(backend, "hooks.example.com")
    assert isinstance(stream, FakeStream)
    assert stream.address == "93.184.216.34"
    assert tcp.connects == [("2606:4700:4700::1111", 443), ("93.184.216.34", 443)]


@pytest.mark.parametrize(
    "answers", [["127.0.0.1"], ["93.184.216.34", "10.0.0.1"], ["::ffff:169.254.169.254"]]
)
def test_backend_refuses_any_blocked_answer_without_connecting(answers: list[str]) -> None:
    tcp = FakeTcp()
    backend = GuardedBackend(allow_private=False, resolve=ScriptedResolver(answers), backend=tcp)
    with pytest.raises(BlockedAddress) as caught:
        connect(backend, "hooks.example.com")
    assert caught.value.host == "hooks.example.com"
    assert caught.value.address in answers
    assert caught.value.reason == blocked_reason(caught.value.address)
    assert tcp.connects == []


@pytest.mark.parametrize(
    ("host", "reason"),
    [("127.0.0.1", "loopback"), ("::1", "loopback"), ("2130706433", "non-canonical")],
)
def test_backend_checks_literals_without_resolving(host: str, reason: str) -> None:
    tcp = FakeTcp()
    backend = GuardedBackend(allow_private=False, resolve=no_resolver, backend=tcp)
    with pytest.raises(BlockedAddress, match=reason):
        connect(backend, host)
    assert tcp.connects == []


def test_backend_with_allow_private_connects_anywhere_it_resolves() -> None:
    tcp = FakeTcp()
    resolver = ScriptedResolver(["127.0.0.1"])
    backend = GuardedBackend(allow_private=True, resolve=resolver, backend=tcp)
    connect(backend, "hooks.example.com", 8080)
    connect(backend, "10.0.0.1", 80)
    assert tcp.connects == [("127.0.0.1", 8080), ("10.0.0.1", 80)]


def test_backend_resolution_failures_are_connect_errors() -> None:
    resolver = ScriptedResolver(socket.gaierror(socket.EAI_NONAME, "unknown"), [])
    backend = GuardedBackend(allow_private=False, resolve=resolver, backend=FakeTcp())
    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        connect(backend, "nowhere.example.com")
    with pytest.raises(httpcore.ConnectError, match="has no address"):
        connect(backend, "nowhere.example.com")


def test_backend_refuses_unix_sockets() -> None:
    backend = GuardedBackend(allow_private=True, resolve=no_resolver, backend=FakeTcp())
    with pytest.raises(BlockedAddress, match="Unix socket"):
        asyncio.run(backend.connect_unix_socket("/run/docker.sock"))
