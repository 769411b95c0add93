"""Routes of the server-server API: ``/_matrix/federation/*`` and ``/_matrix/key/*``."""
