"""The SSRF guard: outgoing webhook, callback and input-URL requests reach only public
addresses.

A URL is checked twice. :func:`check_url`, when it is saved, refuses what can be refused
early with a clear 422 ``invalid_param``: a scheme other than http(s), credentials in the
URL, a bad port, a non-canonical numeric host, and a host that is, or resolves to, a
blocked address. That check alone is not enough: a name can resolve to a public address
when the URL is saved and to 127.0.0.1 when it is delivered (DNS rebinding). So
:func:`guarded_client` sends through an httpcore network backend that resolves the host
itself, checks every address, and connects to a checked address; the TLS handshake and
the ``Host`` header still use the original name. When no address may be used it raises
:class:`BlockedAddress`, which a delivery records as ``blocked_address``.

``TASKGATE_ALLOW_PRIVATE_URLS=true`` (``allow_private``) lifts the address checks for
local development and tests; the scheme, host, credential and port checks remain.

What is blocked, and why, is the explicit table :data:`BLOCKLIST` below, taken from the
IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890) plus cloud metadata
addresses. Python's ``ipaddress`` is consulted only as a last resort: it calls several
of these ranges global (192.0.0.9, 64:ff9b::/96, ::/96, 100:0:0:1::/64, 5f00::/16,
unallocated space such as 4000::/2) and its answers have changed between releases.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpcore
import httpx

from taskgate.core.errors import InvalidInput

#: Resolves ``(host, port)`` to the IP addresses (as strings) a connection may use, in
#: the order to try them. Raises OSError when the name does not resolve.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

IPAddress = IPv4Address | IPv6Address

#: The delivery error code of a request refused by the guard.
BLOCKED_ADDRESS = "blocked_address"

#: How long saving a URL waits for its host to resolve.
SAVE_RESOLVE_TIMEOUT = 5.0

_SCHEMES = {"http": 80, "https": 443}

# Each entry: a network and why it is refused. Lookups take the most specific match, so
# a metadata address inside a wider range gets its own reason.
_ENTRIES: tuple[tuple[str, str], ...] = (
    # IPv4 (IANA IPv4 Special-Purpose Address Registry, RFC 6890 and its updates).
    ("0.0.0.0/8", "'this network' (RFC 791); 0.0.0.0 reaches the local host on Linux"),
    ("10.0.0.0/8", "private-use (RFC 1918)"),
    ("100.64.0.0/10", "shared address space / carrier-grade NAT (RFC 6598)"),
    ("100.100.100.200/32", "cloud metadata (Alibaba Cloud)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927), home of most cloud metadata services"),
    ("169.254.169.254/32", "cloud metadata (AWS, GCP, Azure, OpenStack, Oracle, …)"),
    ("169.254.170.2/32", "cloud metadata (AWS ECS task credentials)"),
    ("168.63.129.16/32", "cloud platform address (Azure WireServer)"),
    ("172.16.0.0/12", "private-use (RFC 1918)"),
    # 192.0.0.0/24 holds DS-Lite, NAT64 discovery and the PCP and TURN anycast
    # addresses (the last two are "global" to ipaddress); none is a webhook receiver.
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.0.192/32", "cloud metadata (Oracle Cloud, legacy)"),
    ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private-use (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
    ("255.255.255.255/32", "limited broadcast (RFC 919)"),
    # IPv6 (IANA IPv6 Special-Purpose Address Registry and IPv6 Address Space). IANA
    # allocates global unicast only from 2000::/3: the rest is special or unallocated.
    ("::/3", "outside IPv6 global unicast space 2000::/3 (RFC 4291)"),
    ("4000::/2", "outside IPv6 global unicast space 2000::/3 (RFC 4291)"),
    ("8000::/1", "outside IPv6 global unicast space 2000::/3 (RFC 4291)"),
    ("::/128", "unspecified (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    ("::/96", "deprecated IPv4-compatible (RFC 4291)"),
    # The local-use NAT64 prefix embeds IPv4 at an operator-chosen position, so the
    # embedded address cannot be checked: refuse the whole prefix.
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("100:0:0:1::/64", "dummy prefix (RFC 9780)"),
    # Teredo, ORCHID, benchmarking, AMT, AS112 and anycast services: tunnels and
    # infrastructure, never webhook receivers. Teredo's embedded IPv4 addresses are
    # checked first, for a precise reason.
    ("2001::/23", "IETF protocol assignments (RFC 2928)"),
    ("2001::/32", "Teredo tunnelling (RFC 4380)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "segment routing SIDs (RFC 9602)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fd00:ec2::254/128", "cloud metadata (AWS IPv6)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("fec0::/10", "deprecated site-local (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
)

#: The blocklist, most specific network first: ``(network, reason)``.
BLOCKLIST: tuple[tuple[IPv4Network | IPv6Network, str], ...] = tuple(
    sorted(
        ((ip_network(net), reason) for net, reason in _ENTRIES),
        key=lambda entry: -entry[0].prefixlen,
    )
)


def _low32(address: IPv6Address) -> list[IPv4Address]:
    return [IPv4Address(int(address) & 0xFFFFFFFF)]


def _sixtofour(address: IPv6Address) -> list[IPv4Address]:
    return [address.sixtofour] if address.sixtofour is not None else []


def _teredo(address: IPv6Address) -> list[IPv4Address]:
    # The server, and the client with its obfuscation (XOR with ones) undone.
    return list(address.teredo) if address.teredo is not None else []


# IPv6 forms that carry an IPv4 address: (prefix, name, extractor, transparent). A
# transparent form reaches exactly its IPv4 address, so its verdict is that address's.
_Extract = Callable[[IPv6Address], list[IPv4Address]]
_EMBEDDING: tuple[tuple[IPv6Network, str, _Extract, bool], ...] = (
    (IPv6Network("::ffff:0:0/96"), "IPv4-mapped", _low32, True),
    (IPv6Network("::ffff:0:0:0/96"), "IPv4-translated", _low32, True),
    (IPv6Network("64:ff9b::/96"), "NAT64", _low32, True),
    (IPv6Network("2002::/16"), "6to4", _sixtofour, False),
    (IPv6Network("2001::/32"), "Teredo", _teredo, False),
)


def blocked_reason(address: str | IPv4Address | IPv6Address) -> str | None:
    """Why an outgoing request must not reach ``address``, or None when it may.

    Blocked: an address in :data:`BLOCKLIST`; an IPv6 address embedding (mapped,
    translated, NAT64, 6to4, Teredo) a blocked IPv4 address; and, as a safety net, any
    address ``ipaddress`` does not call global. Raises ValueError for a string that is
    not an IP address (a name must be resolved first).
    """
    ip = ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, IPv6Address):
        if ip.scope_id is not None:
            ip = IPv6Address(int(ip))
        for prefix, form, extract, transparent in _EMBEDDING:
            if ip not in prefix:
                continue
            for inner in extract(ip):
                reason = blocked_reason(inner)
                if reason is not None:
                    return f"{reason}, embedded as {inner} ({form})"
            if transparent:
                return None
            break
    for network, reason in BLOCKLIST:
        if ip in network:
            return reason
    if not ip.is_global:
        return "not globally reachable"
    return None


class BlockedAddress(httpx.ConnectError):
    """A request refused at connect time: its host is, or resolves to, an address the
    guard blocks. The delivery error code is ``blocked_address``."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        where = host if address == host else f"{host} resolves to {address}, which"
        super().__init__(f"{where} is {reason}")
        self.host = host
        self.address = address
        self.reason = reason


def delivery_error_code(exc: BaseException) -> str | None:
    """The delivery error code of an exception raised while sending: ``blocked_address``
    when the guard refused it (also when wrapped), ``timeout`` and ``connection_error``
    for other transport failures, None for anything else."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        if isinstance(link, BlockedAddress):
            return BLOCKED_ADDRESS
        chain.append(link)
        link = link.__cause__ or link.__context__
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.TransportError):
        return "connection_error"
    return None


# -- hosts --------------------------------------------------------------------

_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.IGNORECASE)
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*", re.IGNORECASE)


def host_address(host: str) -> IPAddress | None:
    """The address a URL host names literally, or None when it is a DNS name.

    A host whose last label is a number (``2130706433``, ``0x7f.1``, ``127.1``,
    ``0177.0.0.1``) is an IPv4 address to browsers and to ``getaddrinfo`` (inet_aton
    rules); only the canonical dotted-decimal form is accepted, so that no two parsers
    disagree about where it points. Raises ValueError for such a non-canonical form, an
    IPv6 zone id, or a name that is not made of DNS labels.
    """
    if ":" in host:
        if "%" in host:
            raise ValueError(f"{host!r}: IPv6 zone ids are not allowed")
        return IPv6Address(host)
    name = host.removesuffix(".")
    labels = name.split(".")
    if _NUMBER.fullmatch(labels[-1]):
        try:
            v4 = IPv4Address(host)
        except ValueError:
            v4 = None
        if v4 is None or str(v4) != host:
            raise ValueError(f"{host!r} is not an IPv4 address in dotted-decimal form{_aton(name)}")
        return v4
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{host!r} is not a valid host name")
    return None


def _aton(host: str) -> str:
    try:
        return f" (it would reach {socket.inet_ntoa(socket.inet_aton(host))})"
    except OSError:
        return ""


def _is_localhost(name: str) -> bool:
    # RFC 6761 §6.3: resolvers answer loopback for localhost and its subdomains.
    name = name.removesuffix(".").lower()
    return name == "localhost" or name.endswith(".localhost")


async def system_resolve(host: str, port: int) -> list[str]:
    """The default :data:`Resolver`: the event loop's ``getaddrinfo``, addresses in the
    system's preferred order, without repeats."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in addresses:
            addresses.append(str(sockaddr[0]))
    return addresses


def _first_blocked(addresses: Iterable[str]) -> tuple[str, str] | None:
    for address in addresses:
        try:
            reason = blocked_reason(address)
        except ValueError:
            reason = "not an IP address"
        if reason is not None:
            return address, reason
    return None


# -- saving a URL -------------------------------------------------------------


async def check_url(
    url: str,
    *,
    allow_private: bool,
    resolve: Resolver | None = None,
    param: str = "url",
) -> str:
    """Check a webhook, callback or input URL when it is saved; return it normalised
    (lowercase scheme and host, IDNA host) as httpx will send it.

    Refused with :class:`InvalidInput` (422 ``invalid_param``, ``param``): a scheme
    other than http or https, a missing host, credentials (``user:pass@``), a port out
    of 1–65535, a non-canonical numeric host, and, unless ``allow_private``, a host
    that is or resolves to a blocked address. A name must resolve, and *every* address
    it resolves to must be allowed: an answer mixing public and private addresses is a
    rebinding attempt waiting for its turn. IP literals are checked without resolving.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidInput(f"{url!r} is not a valid URL: {exc}.", param=param) from exc
    if parsed.scheme not in _SCHEMES:
        raise InvalidInput("The URL must start with http:// or https://.", param=param)
    if parsed.userinfo:
        raise InvalidInput(
            "The URL must not contain credentials (user:password@); "
            "webhooks are authenticated by their signature.",
            param=param,
        )
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise InvalidInput("The URL has no host.", param=param)
    port = parsed.port if parsed.port is not None else _SCHEMES[parsed.scheme]
    if not 1 <= port <= 65535:
        raise InvalidInput(f"Port {port} is not in 1–65535.", param=param)
    try:
        literal = host_address(host)
    except ValueError as exc:
        raise InvalidInput(f"The URL's host is refused: {exc}.", param=param) from exc
    normalised = str(parsed)
    if allow_private:
        return normalised

    if literal is not None:
        addresses = [host]
    elif _is_localhost(host):
        addresses = ["127.0.0.1"]
    else:
        addresses = await _resolve_for_save(resolve or system_resolve, host, port, param)
    blocked = _first_blocked(addresses)
    if blocked is not None:
        address, reason = blocked
        where = host if address == host else f"{host} resolves to {address}, which"
        raise InvalidInput(
            f"The URL is refused: {where} is {reason}. "
            "Webhooks and callbacks must reach a public address.",
            param=param,
            details={"host": host, "address": address, "reason": reason},
        )
    return normalised


async def _resolve_for_save(resolve: Resolver, host: str, port: int, param: str) -> list[str]:
    try:
        async with asyncio.timeout(SAVE_RESOLVE_TIMEOUT):
            addresses = list(await resolve(host, port))
    except TimeoutError as exc:
        raise InvalidInput(f"The URL's host {host} did not resolve in time.", param=param) from exc
    except OSError as exc:
        raise InvalidInput(f"The URL's host {host} does not resolve: {exc}.", param=param) from exc
    if not addresses:
        raise InvalidInput(f"The URL's host {host} has no address.", param=param)
    return addresses


# -- connecting ---------------------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves each host itself and connects only to
    an address it has checked, so that what is checked is what is used.

    Every address a name resolves to must be allowed (the same rule as
    :func:`check_url`); they are then tried in order. ``backend`` makes the TCP
    connections (to IP addresses only); it defaults to httpcore's anyio backend.
    TLS is started by httpcore on the returned stream with the original host name.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolve: Resolver | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._resolve = resolve or system_resolve
        self._backend = backend or httpcore.AnyIOBackend()

    # httpcore's interface names the parameter ``timeout``.
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await self._addresses(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        if not self._allow_private:
            blocked = _first_blocked(addresses)
            if blocked is not None:
                raise BlockedAddress(host, *blocked)
        failure: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.0)
            try:
                return await self._backend.connect_tcp(
                    address,
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def _addresses(self, host: str, port: int) -> list[str]:
        """The addresses to try: an IP literal as is, a name through the resolver."""
        try:
            literal = host_address(host)
        except ValueError as exc:
            if not self._allow_private:
                raise BlockedAddress(host, host, "a malformed or non-canonical host") from exc
            literal = None
        if literal is not None:
            return [host]
        try:
            return list(await self._resolve(host, port))
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress(path, path, "a Unix socket, never a webhook receiver")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool that connects through a
    :class:`GuardedBackend`. No proxy (a proxy would connect on our behalf, unchecked)."""

    def __init__(
        self,
        backend: GuardedBackend,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20),
    ) -> None:
        super().__init__(verify=verify, trust_env=False, limits=limits)
        # httpx takes no network backend, but its pool does: replace the pool httpx
        # built with the same one over the guarded backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectError as exc:
            # httpx passes foreign exceptions through today; should it ever wrap ours in
            # its own ConnectError, unwrap it so callers can rely on the type.
            cause = exc.__cause__
            if isinstance(cause, BlockedAddress):
                raise cause from None
            raise


def guarded_client(
    *,
    allow_private: bool,
    timeout: float,
    resolve: Resolver | None = None,
    backend: httpcore.AsyncNetworkBackend | None = None,
) -> httpx.AsyncClient:
    """An httpx client for webhooks, callbacks and input URLs: every connection goes
    through the guard (:class:`BlockedAddress` when refused), redirects are returned,
    not followed, and the environment (proxies, ``.netrc``) is ignored.

    ``backend`` replaces the one that opens TCP connections to checked addresses (tests
    use it to assert where connections go).
    """
    transport = GuardedTransport(
        GuardedBackend(allow_private=allow_private, resolve=resolve, backend=backend)
    )
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )
