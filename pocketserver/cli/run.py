"""``run``: start the server (with a local try-out config if there is none)."""

from __future__ import annotations

import argparse
import logging
import sys

import trio

import pocketserver
from pocketserver.cli.common import (
    TRYOUT_CONFIG,
    add_config_argument,
    fail,
    find_config,
    load_or_exit,
)
from pocketserver.cli.unpacked import prune_at_start
from pocketserver.config.generate import GenerateError, generate
from pocketserver.logs import LogSetupError, setup_logging

log = logging.getLogger("pocketserver")


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "run",
        help="start the server",
        description="Start the server. With no -c and no ./homeserver.yaml it runs a local "
        "try-out server (server_name localhost, http://127.0.0.1:8008, data in ./pocket-data/).",
    )
    add_config_argument(p)
    p.set_defaults(func=run_command)


def _tryout_config() -> bool:
    """Create the try-out config in ./pocket-data if it is missing; False on failure."""
    if TRYOUT_CONFIG.exists():
        return True
    try:
        generate("localhost", TRYOUT_CONFIG, public_baseurl="http://127.0.0.1:8008/")
    except GenerateError as e:
        print(f"error: cannot create the try-out config: {e}", file=sys.stderr)
        return False
    return True


def run_command(args: argparse.Namespace) -> int:
    from pocketserver.server import run_until_signalled
    from pocketserver.services import StartupError

    found = find_config(getattr(args, "config_path", None))
    tryout = found is None
    if found is None:
        if not _tryout_config():
            return 1
        found = TRYOUT_CONFIG
    path = found
    config = load_or_exit(path)
    if config is None:
        return 1
    try:
        setup_logging(config.log_level, config.logs)
    except LogSetupError as e:
        return fail(str(e))
    prune_at_start(pocketserver.__file__)
    if tryout:
        log.info(
            "no config given and no ./homeserver.yaml: running the local try-out server "
            "(server_name localhost, http://127.0.0.1:8008, config and data in %s/)",
            TRYOUT_CONFIG.parent.resolve(),
        )
    else:
        log.info("using config %s", path.resolve())
    try:
        graceful = trio.run(run_until_signalled, config)
    except StartupError as e:
        return fail(str(e))
    except KeyboardInterrupt:  # ^C before the signal handlers were in place
        return 130
    # SIGTERM or SIGINT: 0, as systemd expects of a clean stop; 130 (as for ^C) when a
    # second signal cut the shutdown short.
    return 0 if graceful else 130
