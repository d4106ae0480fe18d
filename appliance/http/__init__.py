"""The HTTP surface: the server and its routes (server.py), what every request goes through
(middleware.py), WHEP and WHIP (whep.py, whip.py, and resource.py for what they share), the
sessions they create (sessions.py), WHIP egress (egress.py), status, metrics, controls and
snapshots, tokens, rate limits, TLS and connection limits."""
