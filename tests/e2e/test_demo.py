"""``pocket.pyz demo`` end to end: the real ``python -m pocketserver demo`` process starts
three federated servers, prints how to log in, and Ctrl-C stops all three.

What is checked through the servers themselves (not the demo's word): each printed
homeserver URL, user and password logs in; each server, asked as a notary, answers the
other two servers' keys (so it fetched them over TLS trusting the demo's CA); alice's
room exists on server 1 under its alias; bob and carol joined it from their servers and
their messages cross; after SIGINT the demo
and the three server processes are gone; ``--dir`` is kept and a second run in it
starts the same servers, users and room again; without ``--dir`` the temporary
directory is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from pocketserver.cli.demo import READY_LINE
from tests.federation.synapse_peer import free_port

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


@dataclass
class Login:
    url: str
    user: str
    password: str


@dataclass
class Demo:
    proc: subprocess.Popen[str]
    directory: Path | None
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if READY_LINE in line:
                self.ready.set()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready.wait(0.2):
            assert self.proc.poll() is None, f"the demo exited:\n{self.output}"
            assert time.monotonic() < deadline, f"the demo is not ready:\n{self.output}"

    def logins(self) -> list[Login]:
        """The homeserver URLs, users and passwords as printed."""
        text = self.output
        urls = re.findall(r"homeserver URL:\s+(\S+)", text)
        users = re.findall(r"user:\s+(@\S+)", text)
        passwords = re.findall(r"password:\s+(\S+)", text)
        assert len(urls) == len(users) == len(passwords) == 3, text
        return [Login(*values) for values in zip(urls, users, passwords, strict=True)]

    def data_dir(self) -> Path:
        m = re.search(r"data in (\S+)", self.output)
        assert m, self.output
        return Path(m.group(1))

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir() / "demo.json").read_text()))

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(STOP_TIMEOUT_S)


def base_port() -> int:
    """Six free ports in a row below the system's ephemeral range: a port in that range
    can be taken by any outgoing connection between two runs of the demo in one directory
    (which must get its ports back)."""
    lowest = 32768
    with contextlib.suppress(OSError, ValueError):
        lowest = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, lowest - 10)
        if all(_free(base + i) for i in range(6)):
            return base
    return free_port("127.0.0.1")


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_demo(
    cwd: Path,
    directory: Path | None,
    env: dict[str, str] | None = None,
    program: list[str] | None = None,
) -> Demo:
    """Start ``PROGRAM demo`` (``python -m pocketserver`` unless given, e.g. a pyz)."""
    command = [*(program or [sys.executable, "-m", "pocketserver"]), "demo"]
    command += ["--base-port", str(base_port())]
    if directory is not None:
        command += ["--dir", str(directory)]
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    demo = Demo(proc, directory)
    demo.reader = threading.Thread(target=demo.read, daemon=True)
    demo.reader.start()
    return demo


def cleanup(demo: Demo, pids: list[int]) -> None:
    if demo.proc.poll() is None:
        demo.proc.kill()
        demo.proc.wait()
    if demo.reader is not None:
        demo.reader.join(10)
    if demo.proc.stdout is not None:
        demo.proc.stdout.close()
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not running: it only waits for its parent.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    work = tmp_path_factory.mktemp("demo")
    running = start_demo(work, work / "kept")
    pids: list[int] = []
    try:
        running.wait_ready()
        pids = list(running.state()["pids"])
        yield running
    finally:
        cleanup(running, pids)


@contextlib.contextmanager
def login(entry: Login) -> Iterator[httpx.Client]:
    """A client of the printed homeserver URL, logged in with the printed password."""
    with httpx.Client(base_url=entry.url, timeout=30.0) as http:
        yield _logged_in(http, entry)


def _logged_in(http: httpx.Client, entry: Login) -> httpx.Client:
    localpart = entry.user[1:].split(":", 1)[0]
    r = http.post(
        "/_matrix/client/v3/login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": entry.password,
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["user_id"] == entry.user
    http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return http


def test_three_servers_start_and_each_printed_login_works(demo: Demo) -> None:
    logins = demo.logins()
    assert [entry.user.split(":", 1)[0] for entry in logins] == ["@alice", "@bob", "@carol"]
    server_names = {entry.user.split(":", 1)[1] for entry in logins}
    assert len(server_names) == 3
    assert all(name.startswith("127.0.0.1:") for name in server_names)
    for entry in logins:
        with login(entry) as http:
            whoami = http.get("/_matrix/client/v3/account/whoami")
            assert whoami.status_code == 200
            assert whoami.json()["user_id"] == entry.user
        # A wrong password is refused: the printed one is the real one.
        r = httpx.post(
            f"{entry.url}/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": entry.user},
                "password": "wrong",
            },
        )
        assert r.status_code == 403


def test_each_server_fetched_the_others_keys_over_tls(demo: Demo) -> None:
    ca = ssl.create_default_context(cafile=str(demo.data_dir() / "tls" / "ca.pem"))
    names = [entry.user.split(":", 1)[1] for entry in demo.logins()]
    own_keys = {}
    for name in names:
        with httpx.Client(verify=ca, timeout=30.0) as http:
            own_keys[name] = http.get(f"https://{name}/_matrix/key/v2/server").json()
    for asker in names:
        with httpx.Client(base_url=f"https://{asker}", verify=ca, timeout=30.0) as http:
            for other in names:
                if other == asker:
                    continue
                r = http.get(f"/_matrix/key/v2/query/{quote(other)}")
                assert r.status_code == 200, r.text
                keys = [k for k in r.json()["server_keys"] if k["server_name"] == other]
                assert keys, (asker, other, r.text)
                assert keys[0]["verify_keys"] == own_keys[other]["verify_keys"]
                # Answered as a notary: the asker signed the keys it fetched.
                assert asker in keys[0]["signatures"]
                assert other in keys[0]["signatures"]
    # And the servers' TLS does not pass without the demo's CA.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://{names[0]}/_matrix/key/v2/server")


def test_alices_room_exists_on_server_1(demo: Demo) -> None:
    alice = demo.logins()[0]
    server_name = alice.user.split(":", 1)[1]
    with login(alice) as http:
        alias = f"#demo:{server_name}"
        r = http.get(f"/_matrix/client/v3/directory/room/{quote(alias)}")
        assert r.status_code == 200, r.text
        room_id = r.json()["room_id"]
        assert room_id == demo.state()["room_id"]
        name = http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.name/")
        assert name.json() == {"name": "pocketserver demo"}
        members = http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members")
        assert alice.user in members.json()["joined"]
        rules = http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.join_rules/")
        assert rules.json()["join_rule"] == "public"


def test_bob_and_carol_joined_alices_room_from_their_servers(demo: Demo) -> None:
    alice, bob, carol = demo.logins()
    room_id = demo.state()["room_id"]
    assert f"{bob.user}: joined" in demo.output, demo.output
    assert f"{carol.user}: joined" in demo.output, demo.output
    with login(alice) as http:
        deadline = time.monotonic() + 30
        joined: dict[str, object] = {}
        while time.monotonic() < deadline:
            members = http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members")
            joined = members.json()["joined"]
            if {bob.user, carol.user} <= set(joined):
                break
            time.sleep(0.5)
        assert {alice.user, bob.user, carol.user} <= set(joined), joined
    for guest in (bob, carol):
        with login(guest) as http:
            r = http.get(f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.name/")
            assert r.json() == {"name": "pocketserver demo"}
            body = f"hi from {guest.user}"
            sent = http.put(
                f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/demo-test",
                json={"msgtype": "m.text", "body": body},
            )
            assert sent.status_code == 200, sent.text
    # Their messages reach alice's server, and carol's server has bob's.
    for reader, expected in ((alice, [bob, carol]), (carol, [bob])):
        wanted = {f"hi from {user.user}" for user in expected}
        with login(reader) as http:
            bodies: set[str] = set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not wanted <= bodies:
                page = http.get(
                    f"/_matrix/client/v3/rooms/{quote(room_id)}/messages",
                    params={"dir": "b", "limit": 50},
                )
                bodies = {ev["content"].get("body") for ev in page.json()["chunk"]}
                time.sleep(0.5)
            assert wanted <= bodies, (reader.user, bodies)


def test_ctrl_c_stops_all_three_and_a_second_run_in_the_dir_starts_them_again(
    demo: Demo, tmp_path: Path
) -> None:
    state = demo.state()
    pids = list(state["pids"])
    assert len(pids) == 3
    assert all(alive(pid) for pid in pids)
    assert demo.stop(signal.SIGINT) == 0, demo.output
    assert not any(alive(pid) for pid in pids), demo.output
    assert demo.lines[-1] == "stopped", demo.output
    assert demo.directory is not None
    assert (demo.directory / "demo.json").exists()  # --dir is kept

    again = start_demo(tmp_path, demo.directory)
    new_pids: list[int] = []
    try:
        again.wait_ready()
        new_state = again.state()
        new_pids = list(new_state["pids"])
        assert new_state["ports"] == state["ports"]
        assert new_state["room_id"] == state["room_id"]
        assert [(e.user, e.password) for e in again.logins()] == [
            (e.user, e.password) for e in demo.logins()
        ]
        for entry in again.logins():
            with login(entry) as http:
                assert http.get("/_matrix/client/v3/account/whoami").status_code == 200
        assert again.stop(signal.SIGINT) == 0, again.output
        assert not any(alive(pid) for pid in new_pids)
    finally:
        cleanup(again, new_pids)


def test_without_dir_the_temporary_directory_is_removed_on_sigterm(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    demo = start_demo(tmp_path, None, env={"TMPDIR": str(scratch)})
    pids: list[int] = []
    try:
        demo.wait_ready()
        directory = demo.data_dir()
        assert directory.parent == scratch
        pids = list(demo.state()["pids"])
        assert demo.stop(signal.SIGTERM) == 0, demo.output
        assert not any(alive(pid) for pid in pids)
        assert not directory.exists()
        assert f"{directory} removed" in demo.output
    finally:
        cleanup(demo, pids)
