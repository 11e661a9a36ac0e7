"""Which local addresses WebRTC peers in this process offer as ICE host candidates.

aioice offers every interface address except loopback. The embedded engine serves callers on
this machine, and a machine may have no other usable interface (or one that must not be used),
so the engine offers the addresses it is configured with (loopback by default) instead.
"""

from __future__ import annotations

import ipaddress

import aioice.ice


def restrict_host_addresses(addresses: list[str]) -> None:
    chosen = [str(ipaddress.ip_address(address)) for address in addresses]

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]

    aioice.ice.get_host_addresses = host_addresses
