"""Federation: talking to other Matrix servers (server-server API)."""
