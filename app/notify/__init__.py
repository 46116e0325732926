"""Events -> channels: signed webhooks, SSE, SMTP mail, and pending login notifications.

`dispatcher` delivers the outbox (see its docstring for the state machine),
`channels` decides who hears about what, `webhooks` signs and posts,
`email` sends mail, `event_stream` follows the outbox for SSE clients.
"""
