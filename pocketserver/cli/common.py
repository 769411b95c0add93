"""What several commands share: finding and loading the config."""

from __future__ import annotations

import sys
from pathlib import Path

from pocketserver.config import Config, ConfigError, load_config
from pocketserver.core.locality import Locality

DEFAULT_CONFIG = Path("homeserver.yaml")
TRYOUT_DIR = Path("pocket-data")
TRYOUT_CONFIG = TRYOUT_DIR / "homeserver.yaml"


def add_config_argument(parser: object, *, help_suffix: str = "") -> None:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    parser.add_argument(
        "-c",
        "--config-path",
        "--config",
        dest="config_path",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help=f"the config file (default: ./homeserver.yaml{help_suffix})",
    )


def find_config(given: str | None) -> Path | None:
    """The config to use: ``-c``, else ./homeserver.yaml, else the try-out config if present."""
    if given:
        return Path(given)
    if DEFAULT_CONFIG.exists():
        return DEFAULT_CONFIG
    if TRYOUT_CONFIG.exists():
        return TRYOUT_CONFIG
    return None


def load_or_exit(path: Path) -> Config | None:
    """Load the config, printing warnings; on error print it and return None."""
    try:
        config = load_config(path)
    except ConfigError as e:
        print(f"error in config: {e}", file=sys.stderr)
        return None
    for warning in config.warnings:
        print(f"warning: {path}: {warning}", file=sys.stderr)
    return config


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def local_user_id(user: str, server_name: str) -> str:
    """``alice`` or ``@alice:SERVER`` -> ``@alice:SERVER``.

    Raises:
        ValueError: a user ID of another server, or not a user ID; the message says so.
    """
    from pocketserver.core.identifiers import is_valid_user_id

    if not user.startswith("@"):
        return f"@{user}:{server_name}"
    if not is_valid_user_id(user):
        raise ValueError(f"{user} is not a valid user ID")
    if not Locality(server_name).is_mine(user):
        raise ValueError(
            f"{user} is a user of another server: this server is {server_name} "
            f"(give just the part before the colon, or @name:{server_name})"
        )
    return user
