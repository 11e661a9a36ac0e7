"""One DTLS certificate for the engine's peers, as a WebRTC server keeps one per process.

aiortc gives each `RTCPeerConnection` a certificate of its own (its constructor takes none: the
W3C `RTCConfiguration.certificates` is not implemented), computes its three fingerprints for each
answer and builds an OpenSSL context for each DTLS transport. In a churn of short calls that was
about a sixth of the engine's CPU (py-spy, `bench/scaled.py --scenarios churn`; the figures are
in docs/benchmarks.md). Here the engine's peers share one certificate, renewed daily (aiortc's
are valid for 30 days), its fingerprints computed once and one context per SRTP profile list,
whose session cache is off: no session is ever resumed, and none is kept.

A peer made anywhere else in the process (a test's caller, the SIP bridge's) still gets a fresh
certificate: the shared one is handed out only inside `peer_connection`.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, rtcpeerconnection
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint
from OpenSSL import SSL

RENEW_SECONDS = 24 * 3600


class SharedCertificate(RTCCertificate):
    """A certificate whose fingerprints and SSL contexts are computed once."""

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key, cert)
        self.made = time.monotonic()
        self._fingerprints: list[RTCDtlsFingerprint] | None = None
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        if self._fingerprints is None:
            self._fingerprints = super().getFingerprints()
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> SSL.Context:
        # An OpenSSL context serves any number of connections; each DTLS transport makes its own
        # `SSL.Connection` from it, which holds that connection's state.
        key = tuple(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(key)
        if context is None:
            context = super()._create_ssl_context(srtp_profiles)
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            self._contexts[key] = context
        return context


_shared: SharedCertificate | None = None
_in_engine: contextvars.ContextVar[bool] = contextvars.ContextVar("localrealtime_dtls", default=False)


def shared_certificate() -> SharedCertificate:
    global _shared
    if _shared is None or time.monotonic() - _shared.made > RENEW_SECONDS:
        _shared = SharedCertificate.generateCertificate()
    return _shared


class _Certificates(RTCCertificate):
    """What `aiortc.rtcpeerconnection` calls `RTCCertificate`: the shared certificate inside
    `peer_connection`, a fresh one elsewhere, as aiortc makes it."""

    @classmethod
    def generateCertificate(cls) -> Any:
        return shared_certificate() if _in_engine.get() else RTCCertificate.generateCertificate()


rtcpeerconnection.RTCCertificate = _Certificates  # type: ignore[misc]


def peer_connection(configuration: RTCConfiguration) -> RTCPeerConnection:
    """A peer connection with the engine's shared certificate."""
    token = _in_engine.set(True)
    try:
        return RTCPeerConnection(configuration)
    finally:
        _in_engine.reset(token)
