"""Ephemeral streams: typing notifications, read receipts and presence."""
