"""The commands a user types: ``pocket.pyz [--generate-config | run | register-user | ...]``."""

from __future__ import annotations

import argparse
import sys

from pocketserver import __version__
from pocketserver.cli import (
    checkconfig,
    demo,
    generate,
    passwords,
    register_user,
    reset_password,
    run,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pocket.pyz",
        description="pocketserver: a small Matrix homeserver. "
        "Start with --generate-config, then 'run' and 'register-user'.",
    )
    parser.add_argument("--version", action="version", version=f"pocketserver {__version__}")
    generate.add_top_level_arguments(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run.add_parser(commands)
    register_user.add_parser(commands)
    passwords.add_parser(commands)
    reset_password.add_parser(commands)
    checkconfig.add_parser(commands)
    demo.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.generate_config or args.generate_keys:
        if args.command:
            parser.error("--generate-config and --generate-keys cannot be combined with a command")
        if args.generate_config:  # it writes a key too, if there is none
            return generate.generate_command(args)
        return generate.generate_keys_command(args)
    if args.command is None:
        if args.config_path:  # Synapse style: `-c homeserver.yaml` alone runs the server
            return run.run_command(args)
        parser.print_help()
        return 2
    return int(args.func(args))
