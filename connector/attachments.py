"""Fetching a SendMessage's attachment from the URL the command gives, bounded in size, and in time for each
step (resolving, connecting, each read: the timeout given, CONNECTOR_PLATFORM_TIMEOUT_S), not for the whole.

Whoever may write chat.commands chooses the URL, so the worker fetches from public addresses only
(no SSRF into its own network): it resolves each host itself, refuses the host when any address it
resolves to is not public (nor in CONNECTOR_COMMAND_ATTACHMENT_ALLOWED_NETWORKS), and connects to the
address it checked, so that a DNS answer that changes in between is never used. Every connection is
made so, each redirect's too. Only http(s), at most MAX_REDIRECTS redirects, never through a proxy, and
never more than the configured number of bytes (the answer is read in chunks and dropped past the bound).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpcore
import httpx

from connector.eightbyeight import File

__all__ = ["AddressRefused", "AttachmentUnavailable", "CheckedNetwork", "fetch", "is_public"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses it resolves to, as strings.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

ALLOW_SETTING = "CONNECTOR_COMMAND_ATTACHMENT_ALLOWED_NETWORKS"
MAX_REDIRECTS = 5
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix: the last 32 bits are the IPv4 address


class AttachmentUnavailable(Exception):
    """The file could not be fetched (network, non-2xx, too large, not a public address); the message says which and why."""


class AddressRefused(Exception):
    """A host is, or resolves to, an address neither public nor allowed; nothing was connected to. The message names both."""


async def fetch(name: str, content_type: str, url: str, *, max_bytes: int, timeout_s: float, network: CheckedNetwork) -> File:
    """The file at `url`, named and typed as the command says; every connection is made by `network`."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with httpx.AsyncClient(
            transport=_Transport(network), timeout=timeout_s, follow_redirects=True, max_redirects=MAX_REDIRECTS
        ) as client:
            async with client.stream("GET", url) as answer:
                if not answer.is_success:
                    raise AttachmentUnavailable(f"{name}: {_shown(url)} answered HTTP {answer.status_code}")
                async for chunk in answer.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise AttachmentUnavailable(
                            f"{name}: {_shown(url)} has more than CONNECTOR_COMMAND_ATTACHMENT_MAX_BYTES={max_bytes} bytes"
                        )
                    chunks.append(chunk)
    except AddressRefused as exc:
        raise AttachmentUnavailable(
            f"{name}: {_shown(url)}: {exc}; the worker fetches attachments from public addresses only, "
            f"unless {ALLOW_SETTING} allows the network"
        ) from None
    except httpx.HTTPError as exc:
        raise AttachmentUnavailable(f"{name}: {_shown(url)}: {type(exc).__name__}") from None
    return File(name, content_type, b"".join(chunks))


class CheckedNetwork(httpcore.AsyncNetworkBackend):
    """httpcore's network, connecting only to checked addresses: a host's every address must be public or in
    `allowed`, and the connection goes to one of those addresses (in the resolver's order), never to the name.

    TLS is unchanged: httpcore still verifies the certificate of, and sends SNI and Host for, the URL's host.
    """

    def __init__(
        self,
        allowed: Iterable[IPNetwork] = (),
        *,
        resolve: Resolver | None = None,
        connect: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.allowed = tuple(allowed)
        self._resolve = resolve or _resolve
        self._connect = connect or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.checked(host, port, timeout)
        for address in addresses[:-1]:
            try:
                return await self._connect.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError:
                continue  # refused or unreachable: the host's next address may answer
        return await self._connect.connect_tcp(str(addresses[-1]), port, timeout, local_address, socket_options)

    async def checked(self, host: str, port: int, timeout: float | None = None) -> list[IPAddress]:
        """The addresses `host` is or resolves to (within `timeout`), once each; AddressRefused when any is
        neither public nor allowed, httpcore's ConnectError or ConnectTimeout when it does not resolve."""
        try:
            addresses = [ipaddress.ip_address(host)]
            literal = True
        except ValueError:
            literal = False
            try:
                async with asyncio.timeout(timeout):
                    addresses = [ipaddress.ip_address(found) for found in await self._resolve(host, port)]
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"{host} did not resolve in {timeout}s") from None
            except OSError as exc:
                raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            if not self.allows(address):
                raise AddressRefused(
                    f"{host} is not a public address" if literal else f"{host} resolves to {address}, not a public address"
                )
        return list(dict.fromkeys(addresses))

    def allows(self, address: IPAddress) -> bool:
        """Whether the worker may connect to `address`: it is public, or it (or the IPv4 address it embeds) is
        in an allowed network."""
        embedded = embedded_ipv4(address)
        candidates = [address] if embedded is None else [address, embedded]
        return is_public(address) or any(candidate in network for candidate in candidates for network in self.allowed)

    async def sleep(self, seconds: float) -> None:
        await self._connect.sleep(seconds)


def is_public(address: IPAddress) -> bool:
    """Whether `address` is a public unicast address. ipaddress's is_global excludes private (RFC 1918,
    fc00::/7), loopback, link-local (169.254/16 with the cloud metadata address, fe80::/10), CGNAT
    (100.64/10), unspecified and documentation ranges; multicast, reserved and IPv6 site-local (fec0::/10)
    are refused too, which is_global lets through. An IPv6 address that stands for an IPv4 one
    (IPv4-mapped, 6to4, NAT64) is judged by that IPv4 address, whatever Python's version thinks of it."""
    embedded = embedded_ipv4(address)
    if embedded is not None:
        return is_public(embedded)
    site_local = isinstance(address, ipaddress.IPv6Address) and address.is_site_local
    return address.is_global and not (address.is_multicast or address.is_reserved or site_local)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address a connection to `address` reaches: of an IPv4-mapped (::ffff:a.b.c.d), 6to4
    (2002::/16) or NAT64 (64:ff9b::/96) address; None for any other."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.ipv4_mapped or address.sixtofour


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's own transport (it maps requests, answers and httpcore's errors) with its connection pool on
    `network`; no proxy, since the worker could not check what a proxy connects to."""

    def __init__(self, network: httpcore.AsyncNetworkBackend) -> None:
        super().__init__()
        self._pool = httpcore.AsyncConnectionPool(ssl_context=httpx.create_ssl_context(), network_backend=network)


async def _resolve(host: str, port: int) -> list[str]:
    """The addresses of `host` from the system's resolver, as a connection would get them."""
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [sockaddr[0] for _family, _type, _proto, _name, sockaddr in found]


def _shown(url: str) -> str:
    """The URL without its credentials: no user or password, no query (pre-signed URLs carry theirs there), no
    fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
