"""Outgoing webhooks: integrators' endpoints, the outbox of deliveries, and their dispatcher.

- `models`: `WebhookEndpoint` (URL, event types, optional API key scope, secrets) and
  `WebhookMessage` (one delivery of one event to one endpoint: the outbox row).
- `outbox`: writes the rows, inside the transaction of the call's event (`realtime.services`).
- `dispatcher`: sends due rows (claimed exactly once across processes), signed as Standard
  Webhooks say, with retries; run by `realtime.background.run`.
- `guard`: where requests may go (server-side request forgery).
- `api`, `serializers`, `admin`: the `/api/realtime/webhooks` routes and the admin pages.

docs/webhooks.md is the integrators' side.
"""
