"""Server-side key backups (room_keys): versions, keys and the replacement rules."""
