"""Sync: stream positions, the notifier, and (later) /sync responses."""
