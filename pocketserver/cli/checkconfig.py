"""``check-config``: validate a config and print what is in effect, secrets masked."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from pocketserver.cli.common import add_config_argument, fail, find_config, load_or_exit

SECRET_FIELDS = frozenset({"registration_shared_secret", "turn_shared_secret", "password_pepper"})


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "check-config",
        help="validate a config file and print the effective settings",
    )
    add_config_argument(p)
    p.set_defaults(func=check_config_command)


def _plain(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(_plain(v) for v in value)  # type: ignore[type-var]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_config_command(args: argparse.Namespace) -> int:
    path = find_config(getattr(args, "config_path", None))
    if path is None:
        return fail("no config: give -c PATH or run in the folder with homeserver.yaml")
    config = load_or_exit(path)
    if config is None:
        return 1
    effective = {}
    for f in dataclasses.fields(config):
        if f.name in ("warnings", "config_path"):
            continue
        value = getattr(config, f.name)
        if f.name in SECRET_FIELDS and value:
            value = "********"
        elif f.name == "app_services":
            # The registrations by file, without their tokens.
            value = [f"{s.id}: {s.source} (sender {s.sender})" for s in value]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [dataclasses.asdict(v) for v in value]
        effective[f.name] = _plain(value)
    print(f"# {path.resolve()} is valid. Effective configuration (secrets masked):")
    print(yaml.safe_dump(effective, sort_keys=False, default_flow_style=False), end="")
    return 0
