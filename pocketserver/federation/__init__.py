"""Federation: talking to other homeservers (server-server-api.md)."""
