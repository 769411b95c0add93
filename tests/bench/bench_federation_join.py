"""Joining a big room held by Synapse: time and peak memory of pocketserver (issue 10,
"Measure and report": a room with 2,000 members, full state; issue 11 makes it fast).

Run: ``.venv/bin/python tests/bench/bench_federation_join.py [--members 2000]``.

Starts a Synapse (127.0.0.1) and a pocketserver (127.0.0.2) on loopback, as the
interop tests do (tests/federation/). The room is filled cheaply: an admin made with
Synapse's shared-secret registration creates the members with the admin user API
(``PUT /_synapse/admin/v2/users/{userId}``, no password, so no bcrypt) and joins each
one with the admin join API (``POST /_synapse/admin/v1/join/{roomId}``), a few at a
time. Then a pocketserver user joins by alias and we print: the time of the
``POST /join`` (make_join, send_join, the answer's checks and storage), the time
until the room shows in /sync, the state size we hold, and pocketserver's peak RSS
(``VmHWM``) before and after the join.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.federation.conftest import pocket_tls_config  # noqa: E402
from tests.federation.synapse_peer import SynapsePeer, TestCA, running_synapse  # noqa: E402
from tests.harness import registration_mac_for_tests, running_server  # noqa: E402

CLIENT = "/_matrix/client/v3"


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def synapse_admin(synapse: SynapsePeer) -> str:
    """An admin's access token, through shared-secret registration."""
    with synapse.client() as c:
        nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
        mac = registration_mac_for_tests(synapse.shared_secret, nonce, "boss", "pw", True)
        r = c.post(
            "/_synapse/admin/v1/register",
            json={"nonce": nonce, "username": "boss", "password": "pw", "admin": True, "mac": mac},
        )
    r.raise_for_status()
    return str(r.json()["access_token"])


def fill_room(synapse: SynapsePeer, token: str, members: int, workers: int) -> tuple[str, float]:
    """A public room with an alias and ``members`` joined users (the admin included)."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    with synapse.client() as c:
        c.headers.update(headers)
        r = c.post(
            f"{CLIENT}/createRoom",
            json={"preset": "public_chat", "room_alias_name": "big", "name": "Big room"},
        )
        r.raise_for_status()
        room_id = str(r.json()["room_id"])

    def add(i: int) -> None:
        user = f"@m{i:05d}:{synapse.server_name}"
        with synapse.client() as c:
            c.headers.update(headers)
            r = c.put(f"/_synapse/admin/v2/users/{quote(user)}", json={"displayname": f"M {i}"})
            r.raise_for_status()
            for _ in range(5):
                r = c.post(f"/_synapse/admin/v1/join/{quote(room_id)}", json={"user_id": user})
                if r.status_code == 200:
                    return
                time.sleep(0.5)
            r.raise_for_status()

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for n, _ in enumerate(pool.map(add, range(members - 1)), 1):
            if n % 250 == 0:
                print(f"  {n} members joined ({time.monotonic() - started:.0f} s)", flush=True)
    return room_id, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2000, help="room members (default 2000)")
    parser.add_argument("--workers", type=int, default=4, help="parallel member joins")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        base = Path(tmp)
        ca = TestCA(base / "ca")
        fast = {"per_second": 1000, "burst_count": 1000}
        with running_synapse(base / "synapse", ca, rc_joins_per_room=fast) as synapse:
            admin = synapse_admin(synapse)
            print(f"filling a Synapse room with {args.members} members ...", flush=True)
            room_id, fill_s = fill_room(synapse, admin, args.members, args.workers)
            print(f"  filled in {fill_s:.0f} s")
            config = pocket_tls_config(base / "pocket", ca)
            with running_server(config) as pocket:
                pid = pocket.proc.pid
                info = pocket.register("joiner")
                with pocket.client() as c:
                    c.timeout = 900.0
                    c.headers["Authorization"] = f"Bearer {info['access_token']}"
                    c.get(f"{CLIENT}/sync").raise_for_status()
                    rss_before = vm_hwm_kib(pid)
                    alias = f"#big:{synapse.server_name}"
                    t0 = time.monotonic()
                    r = c.post(f"{CLIENT}/join/{quote(alias)}", json={})
                    join_s = time.monotonic() - t0
                    assert r.status_code == 200, r.text
                    assert r.json()["room_id"] == room_id
                    since = None
                    while True:
                        params = {"timeout": "1000", **({"since": since} if since else {})}
                        answer = c.get(f"{CLIENT}/sync", params=params).json()
                        since = answer["next_batch"]
                        if room_id in answer.get("rooms", {}).get("join", {}):
                            break
                    synced_s = time.monotonic() - t0
                    rss_after = vm_hwm_kib(pid)
                database = pocket.config["database"]["args"]["database"]  # type: ignore[index]
                db_path = config.parent / str(database)
            with sqlite3.connect(db_path) as conn:
                held = conn.execute(
                    "SELECT count(*) FROM current_state WHERE room_id = ?", (room_id,)
                ).fetchone()[0]
                events = conn.execute(
                    "SELECT count(*) FROM events WHERE room_id = ?", (room_id,)
                ).fetchone()[0]
    print(f"members: {args.members}")
    print(f"POST /join (make_join + send_join + checks + storage): {join_s:.2f} s")
    print(f"until the room shows in /sync: {synced_s:.2f} s")
    print(f"state entries held: {held}; events stored for the room: {events}")
    before_mib, after_mib = rss_before / 1024, rss_after / 1024
    print(f"pocketserver peak RSS: {before_mib:.1f} MiB before, {after_mib:.1f} MiB after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
