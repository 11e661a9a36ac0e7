"""Where a webhook may be sent (server-side request forgery).

A URL is refused unless every address its host resolves to is public, or in one of the networks
REALTIME_WEBHOOK_ALLOWED_NETWORKS allows (tests allow loopback). Checked when an endpoint is
registered or changed (a 400), and again before every attempt: the name may resolve elsewhere by
then (DNS rebinding). The dispatcher then connects to the very address it checked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext as _

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """The URL may not be called; the message says why (shown to whoever registered it)."""


@dataclass(frozen=True)
class Target:
    """A checked URL: its host (for the Host header and TLS) and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: Address

    def connect_url(self) -> str:
        """The URL with the checked address in place of the host name, so no second lookup happens."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        path = parts.path or "/"
        return f"{self.scheme}://{literal}:{self.port}{path}" + (f"?{parts.query}" if parts.query else "")

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@cache
def _allowed(networks: tuple[str, ...]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks if n.strip())
    except ValueError as exc:
        raise ImproperlyConfigured(f"REALTIME_WEBHOOK_ALLOWED_NETWORKS: {exc}") from None


def address_allowed(address: Address) -> bool:
    # An IPv4 client seen through IPv6 (::ffff:10.0.0.1) is judged as the IPv4 address it is.
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    if any(address in network for network in _allowed(tuple(settings.REALTIME_WEBHOOK_ALLOWED_NETWORKS))):
        return True
    # is_global is False for private, loopback, link-local, shared (100.64/10), multicast... and
    # multicast/reserved are refused even where a registry calls them global.
    return address.is_global and not (address.is_multicast or address.is_reserved or address.is_unspecified)


def parse(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of a URL we could send to; Refused otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused(_("is not a valid URL.")) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(_("must be an http or https URL."))
    if parts.username or parts.password:
        raise Refused(_("must not contain credentials."))
    if not parts.hostname:
        raise Refused(_("must name a host."))
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(_("its host %(host)s cannot be resolved (%(error)s).") % {"host": host, "error": exc}) from None
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check(url: str) -> Target:
    """Resolve the URL's host and check every address it has (blocking: DNS)."""
    scheme, host, port = parse(url)
    addresses = _resolve(host, port)
    refused = [a for a in addresses if not address_allowed(a)]
    if refused or not addresses:
        raise Refused(
            _(
                "its host %(host)s resolves to %(address)s, a private, loopback, link-local or reserved address; webhooks go to public addresses only."
            )
            % {"host": host, "address": refused[0] if refused else "nothing"}
        )
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])


async def acheck(url: str) -> Target:
    """`check` without blocking the event loop (the lookup runs on the default executor)."""
    return await asyncio.get_running_loop().run_in_executor(None, check, url)
