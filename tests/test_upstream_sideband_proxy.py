"""realtime.upstream: the sideband's proxy, taken from the environment as websockets takes it, once."""

from __future__ import annotations

import pytest
import websockets.proxy
import websockets.uri

from realtime import upstream


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    upstream._sideband_proxy.cache_clear()
    yield
    upstream._sideband_proxy.cache_clear()


@pytest.mark.parametrize(
    ("base_url", "env", "expected"),
    [
        ("https://api.openai.com/v1", {}, None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "http://proxy.test:3128"}, "http://proxy.test:3128"),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "http://proxy.test:3128", "NO_PROXY": "api.openai.com"}, None),
        ("http://127.0.0.1:5000/v1", {"HTTP_PROXY": "http://proxy.test:3128"}, "http://proxy.test:3128"),
        # websockets prefers the HTTPS proxy for ws:// too.
        (
            "http://127.0.0.1:5000/v1",
            {"HTTPS_PROXY": "http://secure.test:3128", "HTTP_PROXY": "http://proxy.test:3128"},
            "http://secure.test:3128",
        ),
    ],
)
def test_it_takes_the_sideband_proxy_from_the_environment_as_websockets_does(monkeypatch, base_url, env, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    sideband = base_url.replace("https://", "wss://").replace("http://", "ws://") + "/realtime"

    assert upstream._sideband_proxy(base_url) == expected
    assert websockets.proxy.get_proxy(websockets.uri.parse_uri(sideband)) == expected


def test_it_reads_the_environment_once_per_base_url(monkeypatch):
    assert upstream._sideband_proxy("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")

    assert upstream._sideband_proxy("https://api.openai.com/v1") is None
    assert upstream._sideband_proxy("https://eu.api.openai.com/v1") == "http://proxy.test:3128"
