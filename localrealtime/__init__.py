"""An embedded stand-in for OpenAI's Realtime API (GA contract), backed by a real WebRTC peer.

With no OPENAI_API_KEY the same ASGI server serves it under /v1, so `realtime.upstream` and every
test run the production client code against a real peer: ICE, DTLS, the caller's audio echoed
back, the `oai-events` data channel.
"""
