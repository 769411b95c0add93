"""``--generate-config``: write homeserver.yaml and a signing key."""

from __future__ import annotations

import argparse
from pathlib import Path

from pocketserver.cli.common import DEFAULT_CONFIG, fail
from pocketserver.config.generate import GenerateError, generate
from pocketserver.core.identifiers import is_valid_server_name


def add_top_level_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generating a config (Synapse's spelling)")
    group.add_argument(
        "--generate-config",
        action="store_true",
        help="write a new commented config and signing key, then exit",
    )
    group.add_argument(
        "-H", "--server-name", metavar="NAME", help="the server name (domain of user IDs)"
    )
    group.add_argument(
        "-c",
        "--config-path",
        dest="config_path",
        metavar="PATH",
        help="the config file to write or read (default: ./homeserver.yaml)",
    )
    group.add_argument(
        "--data-directory",
        "--data-dir",
        dest="data_dir",
        metavar="DIR",
        help="where the database and media go (default: the config file's folder)",
    )
    group.add_argument(
        "--report-stats",
        choices=["yes", "no"],
        default="no",
        help="accepted for compatibility; pocketserver never sends statistics",
    )


def generate_command(args: argparse.Namespace) -> int:
    if not args.server_name:
        return fail("--generate-config needs --server-name NAME")
    if not is_valid_server_name(args.server_name):
        return fail(f"{args.server_name!r} is not a valid server name")
    config_path = Path(args.config_path) if args.config_path else DEFAULT_CONFIG
    try:
        result = generate(
            args.server_name,
            config_path,
            Path(args.data_dir) if args.data_dir else None,
            report_stats=args.report_stats == "yes",
        )
    except GenerateError as e:
        return fail(str(e))
    key_note = "kept the existing" if result.key_reused else "wrote a new"
    print(f"Wrote {result.config_path} (mode 0600) and {key_note} signing key")
    print(f"{result.signing_key_path}.")
    print("Edit the config to taste, then start the server with:")
    print(f"  python pocket.pyz run -c {result.config_path}")
    return 0
