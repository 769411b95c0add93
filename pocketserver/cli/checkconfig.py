"""``check-config``: validate a config, check the files it names, print what is in effect."""

from __future__ import annotations

import argparse
import sys

from pocketserver.cli.common import add_config_argument, fail, find_config, load_or_exit
from pocketserver.config.dump import dump_config
from pocketserver.preflight import (
    federation_ca_problems,
    signing_key_problem,
    tls_problems,
    write_problems,
)


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "check-config",
        help="validate a config file and print the effective settings",
        description="Validate a config file, check that the signing key and TLS files it "
        "names can be read, and print the effective settings as YAML (secrets masked).",
    )
    add_config_argument(p)
    p.set_defaults(func=check_config_command)


def check_config_command(args: argparse.Namespace) -> int:
    path = find_config(getattr(args, "config_path", None))
    if path is None:
        return fail("no config: give -c PATH or run in the folder with homeserver.yaml")
    config = load_or_exit(path)
    if config is None:
        return 1
    key = signing_key_problem(config)
    errors = [*([key] if key else []), *tls_problems(config), *federation_ca_problems(config)]
    # Whether the server can write depends on the user it runs as, maybe not ours.
    for problem in write_problems(config):
        print(f"warning: {problem}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"# {path.resolve()} is valid. Effective configuration (secrets masked):")
    print(dump_config(config), end="")
    return 0
