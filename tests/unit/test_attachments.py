"""Attachments fetched by URL: public addresses only (no SSRF), each host resolved once and connected to by the
address checked, every redirect checked the same way; networks allowed by the setting let through.

No network: the resolver is a table and the connections are httpcore mock streams, answering canned HTTP.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

import httpcore
import pytest

from connector.attachments import (
    ALLOW_SETTING,
    MAX_REDIRECTS,
    AttachmentUnavailable,
    CheckedNetwork,
    fetch,
    is_public,
)
from connector.eightbyeight import File
from connector.eightbyeight.base import ATTACHMENTS
from tests.unit.fakes import Worker, send, start

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1::1"
PDF = b"%PDF"


def ok(body: bytes = PDF) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)


def redirect(location: str) -> bytes:
    return b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % location.encode()


class Stream(httpcore.AsyncMockStream):
    """A connection answering canned bytes; it keeps what was written to it and the TLS server name asked for."""

    def __init__(self, answer: bytes) -> None:
        super().__init__([answer])
        self.written = b""
        self.server_hostname: str | None = None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written += buffer

    async def start_tls(self, ssl_context: object, server_hostname: str | None = None, timeout: float | None = None) -> Stream:
        self.server_hostname = server_hostname
        return self


class Network(httpcore.AsyncNetworkBackend):
    """The network under CheckedNetwork: each connection by address, answered from `answers` (refused otherwise)."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.connected: list[tuple[str, int]] = []
        self.streams: list[Stream] = []

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None, socket_options: Iterable[object] | None = None
    ) -> Stream:
        self.connected.append((host, port))
        if host not in self.answers:
            raise httpcore.ConnectError(f"{host}: connection refused")
        self.streams.append(Stream(self.answers[host]))
        return self.streams[-1]

    async def sleep(self, seconds: float) -> None:
        pass


class Resolver:
    """DNS as a table; each host's answers in turn (the last one repeated), and every question asked."""

    def __init__(self, **answers: list[str] | list[list[str]]) -> None:
        self.answers = {host.replace("_", "."): value for host, value in answers.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        value = self.answers[host]
        if value and isinstance(value[0], list):
            turn = sum(1 for asked in self.asked if asked == host) - 1
            return value[min(turn, len(value) - 1)]  # type: ignore[return-value]
        return value  # type: ignore[return-value]


def checked(network: Network, resolver: Resolver | None = None, allowed: Iterable[str] = ()) -> CheckedNetwork:
    return CheckedNetwork([ipaddress.ip_network(cidr) for cidr in allowed], resolve=resolver or Resolver(), connect=network)


async def get(url: str, network: CheckedNetwork) -> File:
    return await fetch("a.pdf", "application/pdf", url, max_bytes=1_000, timeout_s=5, network=network)


# Addresses a command must not make the worker reach, by class, in URL host form.
REFUSED = [
    "127.0.0.1", "127.1.2.3",  # loopback
    "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1",  # RFC 1918
    "169.254.169.254", "169.254.0.1",  # link-local: cloud metadata (AWS, GCP, Azure)
    "100.64.0.1", "100.100.100.200",  # CGNAT (Alibaba Cloud's metadata)
    "0.0.0.0", "0.1.2.3",  # unspecified, "this network" (0.0.0.0 reaches localhost on Linux)
    "224.0.0.1", "239.255.255.250",  # multicast (ipaddress's is_global says True)
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "192.0.2.1", "198.18.0.1",  # documentation, benchmarking
    "[::1]", "[::]",  # IPv6 loopback, unspecified
    "[fe80::1]", "[fd00:ec2::254]", "[fc00::1]",  # link-local, unique local (AWS's IPv6 metadata)
    "[fec0::1]",  # deprecated site-local (is_global says True)
    "[ff02::1]", "[ff0e::1]",  # multicast
    "[2001:db8::1]", "[2001::1]",  # documentation, Teredo
    "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[::ffff:10.0.0.1]",  # IPv4-mapped
    "[::127.0.0.1]",  # IPv4-compatible (deprecated)
    "[64:ff9b::169.254.169.254]", "[64:ff9b::10.0.0.1]",  # NAT64 of internal IPv4 addresses
    "[2002:a9fe:a9fe::1]", "[2002:7f00:1::1]",  # 6to4 of internal IPv4 addresses
]


@pytest.mark.parametrize("host", REFUSED)
async def test_a_url_on_a_non_public_address_is_refused_before_any_connection(host: str) -> None:
    network = Network({})
    resolver = Resolver()
    with pytest.raises(AttachmentUnavailable) as refused:
        await get(f"http://{host}:8080/latest/meta-data/?X-Amz-Signature=secret", checked(network, resolver))
    reason = str(refused.value)
    assert reason.startswith(f"a.pdf: http://{host}:8080/latest/meta-data/: ")
    assert "is not a public address" in reason and ALLOW_SETTING in reason
    assert "secret" not in reason and "X-Amz" not in reason  # pre-signed URLs carry credentials in the query
    assert network.connected == [] and resolver.asked == []  # an address literal is checked as it is


@pytest.mark.parametrize(
    "url",
    ["http://bob:s3cret@127.0.0.1:8080/a.pdf?X-Amz-Signature=secret#frag", "http://bob:s3cret@127.0.0.1:8080/a.pdf"],
)
async def test_a_refusal_names_the_url_without_its_credentials(url: str) -> None:
    with pytest.raises(AttachmentUnavailable) as refused:
        await get(url, checked(Network({}), Resolver()))
    reason = str(refused.value)
    assert reason.startswith("a.pdf: http://127.0.0.1:8080/a.pdf: ")
    assert "bob" not in reason and "s3cret" not in reason and "secret" not in reason and "frag" not in reason


@pytest.mark.parametrize("address", ["8.8.8.8", PUBLIC_V4, PUBLIC_V6, "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_and_the_ipv6_forms_of_public_ipv4_ones_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("host", REFUSED)
def test_every_refused_class_is_not_public(host: str) -> None:
    assert not is_public(ipaddress.ip_address(host.strip("[]")))


async def test_a_public_host_is_connected_to_by_the_address_it_was_checked_as_with_its_name_kept_for_tls() -> None:
    network = Network({PUBLIC_V4: ok()})
    file = await get("https://files.example/a.pdf?sig=s", checked(network, Resolver(files_example=[PUBLIC_V4])))
    assert file == File("a.pdf", "application/pdf", PDF)
    assert network.connected == [(PUBLIC_V4, 443)]
    (stream,) = network.streams
    assert stream.server_hostname == "files.example"  # SNI and certificate check: the URL's host
    assert b"\r\nhost: files.example\r\n" in stream.written.lower()


async def test_a_dns_answer_that_changes_after_the_check_is_never_used() -> None:
    """DNS rebinding: the name is resolved once per connection, and the address checked is the one connected to."""
    network = Network({PUBLIC_V4: ok()})
    resolver = Resolver(files_example=[[PUBLIC_V4], ["169.254.169.254"]])
    await get("http://files.example/a.pdf", checked(network, resolver))
    assert resolver.asked == ["files.example"] and network.connected == [(PUBLIC_V4, 80)]


@pytest.mark.parametrize("addresses", [[PUBLIC_V4, "10.0.0.5"], ["10.0.0.5", PUBLIC_V4], [PUBLIC_V6, "fd00::5"]])
async def test_a_host_with_any_non_public_address_is_refused(addresses: list[str]) -> None:
    network = Network({PUBLIC_V4: ok(), PUBLIC_V6: ok()})
    with pytest.raises(AttachmentUnavailable, match=r"mixed\.example resolves to (10\.0\.0\.5|fd00::5), not a public address"):
        await get("https://mixed.example/a.pdf?sig=s", checked(network, Resolver(mixed_example=addresses)))
    assert network.connected == []


@pytest.mark.parametrize(
    ("location", "refused"),
    [
        ("http://metadata.internal/latest/meta-data/iam?token=t", "metadata.internal resolves to 169.254.169.254"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is not"),
        ("http://[::ffff:127.0.0.1]:6067/metrics", "::ffff:127.0.0.1 is not"),
        ("http://localhost:6067/metrics", "localhost resolves to 127.0.0.1"),
    ],
)
async def test_a_redirect_to_a_non_public_address_is_refused(location: str, refused: str) -> None:
    network = Network({PUBLIC_V4: redirect(location), "169.254.169.254": ok(b"role"), "127.0.0.1": ok(b"metrics")})
    resolver = Resolver(files_example=[PUBLIC_V4], metadata_internal=["169.254.169.254"], localhost=["127.0.0.1", "::1"])
    with pytest.raises(AttachmentUnavailable) as error:
        await get("https://files.example/a.pdf?sig=s", checked(network, resolver))
    reason = str(error.value)
    assert reason.startswith("a.pdf: https://files.example/a.pdf: ") and refused in reason and ALLOW_SETTING in reason
    assert "sig=" not in reason and "token" not in reason
    assert network.connected == [(PUBLIC_V4, 443)]


async def test_each_redirect_is_resolved_and_checked_and_they_are_bounded() -> None:
    network = Network({PUBLIC_V4: redirect("https://cdn.example/a.pdf"), PUBLIC_V6: ok()})
    resolver = Resolver(files_example=[PUBLIC_V4], cdn_example=[PUBLIC_V6])
    assert (await get("https://files.example/a.pdf", checked(network, resolver))).data == PDF
    assert resolver.asked == ["files.example", "cdn.example"] and network.connected == [(PUBLIC_V4, 443), (PUBLIC_V6, 443)]

    looping = Network({PUBLIC_V4: redirect("/again")})
    with pytest.raises(AttachmentUnavailable, match="TooManyRedirects"):
        await get("https://files.example/a.pdf", checked(looping, Resolver(files_example=[PUBLIC_V4])))
    assert len(looping.connected) == MAX_REDIRECTS + 1


async def test_the_allowed_networks_let_their_addresses_through_and_no_others() -> None:
    mapped = str(ipaddress.ip_address("::ffff:127.0.0.1"))  # as this Python writes it
    network = Network({"127.0.0.1": ok(), mapped: ok(), "::1": ok()})
    allowed = checked(network, Resolver(localhost=["127.0.0.1", "::1"]), allowed=["127.0.0.0/8", "::1/128"])
    for url in ("http://127.0.0.1:8088/files/a.pdf?sig=s", "http://[::ffff:127.0.0.1]:8088/a", "http://[::1]:8088/a", "http://localhost:8088/a"):
        assert (await get(url, allowed)).data == PDF, url
    assert network.connected == [("127.0.0.1", 8088), (mapped, 8088), ("::1", 8088), ("127.0.0.1", 8088)]
    for url in ("http://10.0.0.1/a", "http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(AttachmentUnavailable, match="not a public address"):
            await get(url, allowed)


async def test_the_next_checked_address_is_tried_when_one_does_not_answer() -> None:
    network = Network({PUBLIC_V4: ok()})
    await get("https://files.example/a.pdf", checked(network, Resolver(files_example=[PUBLIC_V6, PUBLIC_V4, PUBLIC_V6])))
    assert network.connected == [(PUBLIC_V6, 443), (PUBLIC_V4, 443)]


async def test_a_host_that_does_not_resolve_is_unavailable() -> None:
    with pytest.raises(AttachmentUnavailable, match=r"^a\.pdf: https://nowhere\.example/a\.pdf: ConnectError$"):
        await get("https://nowhere.example/a.pdf?sig=s", checked(Network({})))


async def test_the_system_resolver_is_used_and_its_answer_checked() -> None:
    """2130706433 is 127.0.0.1 to getaddrinfo (inet_aton's forms): no address literal to ipaddress, refused all the same."""
    network = Network({"127.0.0.1": ok()})
    with pytest.raises(AttachmentUnavailable, match="2130706433 resolves to 127.0.0.1, not a public address"):
        await get("http://2130706433/a.pdf", CheckedNetwork(connect=network))
    assert network.connected == []


async def test_a_send_whose_attachment_url_is_internal_fails_with_the_reason_and_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = Worker(monkeypatch)
    worker.platform.features = frozenset({ATTACHMENTS})  # type: ignore[attr-defined]  # Chat Gateway's
    message = send("c2", "r1", "see attached")
    message["command"][1]["attachments"] = [
        {"file_name": "a.pdf", "content_type": "application/pdf", "data": None, "url": "http://169.254.169.254/latest/meta-data/?sig=secret"}
    ]
    await worker.run(start("c1", "r1"), message)
    answer = worker.result_of("c2")
    assert (answer["status"], answer["error_code"]) == ("FAILED", "ATTACHMENT_UNAVAILABLE")
    assert "169.254.169.254 is not a public address" in answer["error_message"] and ALLOW_SETTING in answer["error_message"]
    assert "secret" not in answer["error_message"]
    assert worker.platform.made("send") == []
