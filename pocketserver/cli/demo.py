"""``demo``: three federated pocketservers on 127.0.0.1, a user on each and a shared room.

For trying federation without DNS or certificates (issue 10 section 5; Synapse has the
same idea as a shell script, demo/start.sh). What it does, in order:

1. a throw-away CA and a certificate for 127.0.0.1 (demo_tls.py, the ``openssl`` command);
2. three configs, servers ``127.0.0.1:F`` (demo_servers.py), and three ``run`` processes;
3. users alice, bob and carol (one per server), the key check, alice's room on server 1,
   bob and carol joining it from their servers (demo_setup.py);
4. prints how to log in to each, then waits; Ctrl-C (or SIGTERM) stops all three.

``--dir DIR`` keeps everything in DIR and a later ``demo --dir DIR`` starts the same
servers again (same ports, users, passwords and room, kept in ``demo.json``); without
it the demo works in a new temporary directory, removed when it stops.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from pocketserver.cli.demo_servers import (
    COUNT,
    HOST,
    DemoError,
    DemoServer,
    Ports,
    check_ports_free,
    choose_ports,
    start,
    stop_all,
    wait_ready,
    write_config,
)

DEFAULT_BASE_PORT = 8480
STATE_FILE = "demo.json"
READY_LINE = "The demo is ready."


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "demo",
        help="start three federated servers on 127.0.0.1 to try federation",
        description="Start three federated pocketservers on 127.0.0.1 (TLS with a "
        "throw-away CA made on the spot), a user on each (alice, bob, carol) and a room "
        "shared by them, and print how to log in to each. Ctrl-C stops all three. "
        "Needs the openssl command.",
    )
    p.add_argument(
        "--base-port",
        type=_base_port,
        default=DEFAULT_BASE_PORT,
        metavar="PORT",
        help=f"federation (TLS) on PORT..PORT+2, clients (plain HTTP) on PORT+3..PORT+5 "
        f"(default {DEFAULT_BASE_PORT}; if one is taken, free ports are used instead)",
    )
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the servers' configs, data and logs in DIR (made if missing, reused if "
        "it holds an earlier demo); default: a temporary directory, removed on exit",
    )
    p.set_defaults(func=demo_command)


def _base_port(text: str) -> int:
    """``--base-port``: the six ports from it must be valid TCP ports."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text}") from None
    if not 1 <= port <= 65535 - 2 * COUNT + 1:
        raise argparse.ArgumentTypeError(f"must be from 1 to {65535 - 2 * COUNT + 1}")
    return port


class _Stop(Exception):
    """Ctrl-C (SIGINT) or SIGTERM arrived: stop the servers."""


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop


class _Hurry:
    """While the servers stop: a further Ctrl-C or SIGTERM asks to stop them at once."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self, signum: int, frame: FrameType | None = None) -> None:
        if not self.asked:
            print("stopping them at once", flush=True)
        self.asked = True


def demo_command(args: argparse.Namespace) -> int:
    import httpx

    keep = args.dir is not None
    directory = (
        args.dir.expanduser().absolute() if keep else Path(tempfile.mkdtemp(prefix="pocket-demo-"))
    )
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Both stop the demo, also when started where SIGINT is ignored (a background job).
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    servers: list[DemoServer] = []
    code = 0
    try:
        servers = _prepare(directory, args.base_port)
        for server in servers:
            start(server)
        wait_ready(servers)
        _setup_and_print(directory, servers, keep)
        _watch(servers)
        code = 1  # _watch returns only when a server stopped by itself
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    except httpx.HTTPError as e:  # a server did not answer the set-up's requests
        print(f"error: a server did not answer as expected: {e}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, _Stop):  # KeyboardInterrupt: a Ctrl-C before the handler
        code = 0
    finally:
        hurry = _Hurry()
        signal.signal(signal.SIGINT, hurry)
        signal.signal(signal.SIGTERM, hurry)
        if servers:
            print("\nstopping the servers...", flush=True)
        stop_all(servers, lambda: hurry.asked)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stopped" + ("" if keep else f"; {directory} removed"), flush=True)
    return code


def _load_state(directory: Path) -> dict[str, object]:
    path = directory / STATE_FILE
    if not path.exists():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def _save_state(directory: Path, state: dict[str, object]) -> None:
    path = directory / STATE_FILE
    path.write_text(json.dumps(state, indent=2) + "\n")
    path.chmod(0o600)  # it holds the passwords


def _prepare(directory: Path, base_port: int) -> list[DemoServer]:
    """Certificates, ports and configs: new, or those of an earlier run in ``directory``."""
    from pocketserver.cli.demo_tls import DemoTlsError, make_certificates

    directory.mkdir(parents=True, exist_ok=True)
    state = _load_state(directory)
    saved = state.get("ports")
    if isinstance(saved, list) and len(saved) == COUNT:
        ports = [Ports(int(f), int(c)) for f, c in saved]
        servers = [DemoServer(i + 1, p, directory / f"server{i + 1}") for i, p in enumerate(ports)]
        check_ports_free(servers)
    else:
        ports, asked = choose_ports(base_port)
        if not asked:
            print(f"ports {base_port}-{base_port + 2 * COUNT - 1} are not all free: using others")
        servers = [DemoServer(i + 1, p, directory / f"server{i + 1}") for i, p in enumerate(ports)]
        state["ports"] = [[p.federation, p.client] for p in ports]
        _save_state(directory, state)
    try:
        certs = make_certificates(directory / "tls", HOST)
    except DemoTlsError as e:
        raise DemoError(str(e)) from None
    for server in servers:
        server.directory.mkdir(parents=True, exist_ok=True)
        write_config(server, certs)
    print(f"starting three pocketservers in {directory} ...", flush=True)
    return servers


def _setup_and_print(directory: Path, servers: list[DemoServer], keep: bool) -> None:
    from pocketserver.cli.demo_setup import USERS, check_keys, join_from_afar, make_room, make_user

    state = _load_state(directory)
    state["pids"] = [s.proc.pid for s in servers if s.proc is not None]
    passwords = state.get("passwords")
    passwords = dict(passwords) if isinstance(passwords, dict) else {}
    users = [
        make_user(s, name, passwords.get(name)) for s, name in zip(servers, USERS, strict=True)
    ]
    state["passwords"] = {u.localpart: u.password for u in users}
    _save_state(directory, state)
    check_keys(servers, str(directory / "tls" / "ca.pem"))
    room_id = state.get("room_id")
    room = make_room(users[0], room_id if isinstance(room_id, str) else None)
    state["room_id"] = room.room_id
    _save_state(directory, state)
    for user in users[1:]:
        join_from_afar(user, room, servers[0])

    print(f"\nThree federated pocketservers on {HOST}, data in {directory}")
    print("(kept: run the same command again to restart them)" if keep else "(removed on exit)")
    for server, user in zip(servers, users, strict=True):
        print(f"\n  server {server.number}: {server.server_name}")
        print(f"    homeserver URL: {server.client_url}")
        print(f"    user:           {user.user_id}")
        print(f"    password:       {user.password}")
        print(f"    log:            {server.log_path}")
    print(f"\n  room {room.alias} ({room.room_id}), made by alice on server 1:")
    for user_id, outcome in room.joined.items():
        print(f"    {user_id}: {outcome}")
    print(
        f"\n  Federation between the servers is TLS with a CA made for this demo "
        f"({directory / 'tls' / 'ca.pem'}); clients use the plain HTTP URLs above."
    )
    print(f"\n{READY_LINE} Press Ctrl-C to stop the three servers.", flush=True)


def _watch(servers: list[DemoServer]) -> None:
    """Wait for Ctrl-C; return if a server stops by itself (reported)."""
    while True:
        for server in servers:
            assert server.proc is not None
            if server.proc.poll() is not None:
                print(
                    f"error: server {server.number} stopped (exit {server.proc.returncode}); "
                    f"see {server.log_path}",
                    file=sys.stderr,
                )
                return
        time.sleep(0.5)
