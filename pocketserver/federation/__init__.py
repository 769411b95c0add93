"""Federation: talking to other homeservers (server-server API)."""
