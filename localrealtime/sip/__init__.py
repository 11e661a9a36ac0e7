"""OpenAI's SIP side, offline: a SIP user agent with G.711 RTP echo, DTMF and signed webhooks.

`run_sip(engine, stop, host=..., port=...)` serves it on the engine's event loop (the one its
HTTP surface and sideband sockets run on) until `stop` is set.
"""

from __future__ import annotations

from .agent import SipAgent, run_sip

__all__ = ["SipAgent", "run_sip"]
