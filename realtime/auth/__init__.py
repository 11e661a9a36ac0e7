"""Who is asking, and what they may do: one set of rules for the REST API, the sockets and the pages.

A request is made by one principal, or by nobody (refused with 401):

- an **API key** (integrators, `Authorization: Bearer <key>`): creates calls, and sees and ends
  only the calls it created. A key always acts as itself, whoever owns it;
- a **staff user** (session login): sees every call with `realtime.view_call`, creates calls with
  `realtime.add_call`, ends them with `realtime.end_call`;
- **local** (only with `REALTIME_LOCAL_MODE`): an anonymous request from loopback, which may do
  everything, so the seed's examples work as written on a developer's machine.

A bad, revoked or expired key is refused outright, even from loopback: a client that sends a key
means to use it, and silently treating it as anonymous would hide the mistake.

Cookies are ambient (a browser sends them to us from any site), so the cookie-less "local" and the
session principals also require the request's `Origin`, when there is one, to be this very host:
another site open in the same browser cannot drive the API or a socket on the user's behalf.

The modules, by concern:

- `principals`: the `Principal`, keys, origins and loopback, and what a principal may see;
- `authentication`: DRF authentication classes, which set `request.auth` to the principal;
- `websocket`: the same rules for a WebSocket handshake;
- `pages`: the same rules for the HTML pages (the demo).
"""
