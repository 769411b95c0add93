"""End-to-end encryption keys: device keys, one-time and fallback keys, cross-signing,
and the device list stream that /sync and /keys/changes read."""
