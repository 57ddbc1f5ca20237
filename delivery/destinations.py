"""Where provider credentials may be sent.

A provider's `base_url` / `endpoint_url` / `host` decides where the worker
posts the provider's API key or password. Pointed at a loopback, private,
link-local (cloud metadata at 169.254.169.254), multicast or unspecified
address, it would hand those secrets, and a request of our choosing, to
whatever listens inside our network. So such destinations are refused
unless the `allow_private_provider_hosts` setting allows them (tests and a
local SMTP server need it):

- when a provider is saved (`check_provider_destinations`): IP literals,
  and host names resolved with a short timeout (a name that does not
  resolve now is accepted: the send-time check still applies);
- at send time: the HTTP adapters connect through `GuardedNetworkBackend`,
  which resolves the name itself, refuses if any address is not public,
  and connects to the address it checked (so a DNS answer that changes
  between the check and the connection, DNS rebinding, cannot slip a
  private address in). TLS still verifies the certificate for the name.
  SMTP and SES check the host just before each connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from core.errors import ValidationFailed

RESOLVE_TIMEOUT_SECONDS = 2.0

# Per kind: the settings naming a destination, and whether each is a URL (else a bare host).
DESTINATION_SETTINGS: dict[str, dict[str, bool]] = {
    "sendgrid": {"base_url": True},
    "mixmax": {"base_url": True},
    "ses": {"endpoint_url": True},
    "smtp": {"host": False},
}


class PrivateDestination(Exception):
    """A provider destination resolves to an address that is not public."""


def is_public(address: str) -> bool:
    """Whether an IP address is a public unicast address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


async def resolve(host: str, port: int | None = None, timeout: float = RESOLVE_TIMEOUT_SECONDS) -> list[str]:
    """Every address `host` resolves to (IP literals as themselves)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=timeout)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refuse_private(host: str, addresses: Iterable[str]) -> None:
    """PrivateDestination when any address is not public."""
    private = [a for a in addresses if not is_public(a)]
    if private:
        raise PrivateDestination(
            f"{host} resolves to {', '.join(private)}, which is not a public address; provider "
            "credentials are only sent to public hosts (set ALLOW_PRIVATE_PROVIDER_HOSTS=true to allow)"
        )


async def check_host(host: str, port: int | None = None) -> list[str]:
    """The host's addresses, all public; PrivateDestination otherwise."""
    addresses = await resolve(host, port)
    refuse_private(host, addresses)
    return addresses


def _host_of(value: Any, is_url: bool) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if not is_url:
        return value
    parts = urlsplit(value)
    return parts.hostname


async def check_provider_destinations(kind: str, settings: dict[str, Any], allow_private: bool) -> None:
    """ValidationFailed (422) when a provider's destination is not an
    http(s) URL, or (unless allowed) is or resolves to a non-public address."""
    errors = []
    for name, is_url in DESTINATION_SETTINGS.get(kind, {}).items():
        value = settings.get(name)
        if value is None:
            continue
        loc = f"body.settings.{name}"
        if is_url and (
            not isinstance(value, str)
            or urlsplit(value).scheme not in ("http", "https")
            or not _host_of(value, True)
        ):
            errors.append({"loc": loc, "msg": "must be an http:// or https:// URL with a host"})
            continue
        host = _host_of(value, is_url)
        if host is None:
            errors.append({"loc": loc, "msg": "must be a host name or address"})
            continue
        if allow_private:
            continue
        try:
            await check_host(host)
        except PrivateDestination as exc:
            errors.append({"loc": loc, "msg": str(exc)})
        except (OSError, TimeoutError):
            pass  # not resolvable now: the send-time check decides
    if errors:
        raise ValidationFailed(errors)


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to public addresses it
    resolved itself (see the module docstring)."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, refuse non-public addresses, connect to the first checked one."""
        try:
            addresses = await resolve(host, port, timeout or RESOLVE_TIMEOUT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from None
        try:
            refuse_private(host, addresses)
        except PrivateDestination as exc:
            raise httpcore.ConnectError(str(exc)) from None
        return await self._backend.connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> Any:
        """Provider traffic never goes through a Unix socket."""
        raise httpcore.ConnectError("unix sockets are not provider destinations")

    async def sleep(self, seconds: float) -> None:
        """As the wrapped backend."""
        await self._backend.sleep(seconds)


def provider_http_client(timeout: float, headers: dict[str, str], allow_private: bool) -> httpx.AsyncClient:
    """The HTTP client of a provider adapter: with the guarded backend
    unless private destinations are allowed. An explicit transport also
    means no proxy from the environment, whose address the guard cannot see past."""
    if allow_private:
        return httpx.AsyncClient(timeout=timeout, headers=headers)
    transport = httpx.AsyncHTTPTransport()
    # httpx builds its httpcore pool inside the transport and offers no
    # argument for the network backend; set it before any connection exists.
    pool = transport._pool
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    pool._network_backend = GuardedNetworkBackend()
    return httpx.AsyncClient(timeout=timeout, headers=headers, transport=transport)
