"""``--generate-config``: write homeserver.yaml and a signing key."""

from __future__ import annotations

import argparse
from pathlib import Path

from pocketserver.cli.common import DEFAULT_CONFIG, fail, find_config, load_or_exit
from pocketserver.config.generate import GenerateError, generate, write_new_signing_key
from pocketserver.core.identifiers import is_valid_server_name
from pocketserver.preflight import signing_key_problem


def add_top_level_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("generating a config (Synapse's spelling)")
    group.add_argument(
        "--generate-config",
        action="store_true",
        help="write a new commented config and signing key, then exit",
    )
    group.add_argument(
        "--generate-keys",
        action="store_true",
        help="with -c: write the signing key the config names if it is missing "
        "(never replaces an existing one), then exit",
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


def generate_keys_command(args: argparse.Namespace) -> int:
    """``--generate-keys``: write a missing signing key (Synapse's flag)."""
    path = find_config(args.config_path)
    if path is None:
        return fail("--generate-keys needs the config: give -c PATH")
    config = load_or_exit(path)
    if config is None:
        return 1
    key_path = config.signing_key_path
    try:
        written = write_new_signing_key(key_path)
    except GenerateError as e:
        return fail(str(e))
    if written:
        print(f"Wrote a new signing key {key_path} (mode 0600).")
        return 0
    problem = signing_key_problem(config)
    if problem is not None:
        return fail(f"{problem}; not replacing it (move it away to make a new one)")
    print(f"The signing key {key_path} exists already; kept it.")
    return 0
