"""SIPp command lines shared by the phone-call benchmark and tests (scenarios live in tests/sip/)."""

from __future__ import annotations

from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent.parent / "tests" / "sip"


def sipp_command(sip_port: int, scenario: str, *, port: int, media_port: int, called: str = "+33180000002") -> list[str]:
    """SIPp calling the engine's project URI from its own loopback ports (signalling, media)."""
    return [
        "sipp",
        f"127.0.0.1:{sip_port}",
        "-sf",
        str(SCENARIOS / scenario),
        "-s",
        "proj_local",
        "-key",
        "called",
        called,
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-mp",
        str(media_port),
        "-nostdin",
        "-timeout_error",
    ]
