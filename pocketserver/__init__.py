"""pocketserver: a Matrix homeserver for small hosts."""

__version__ = "0.1.0.dev0"
