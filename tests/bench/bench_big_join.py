"""Joining a BIG room held by a test peer (issue #11 "Measure and report"): time to the
first usable moment, time to full state and peak RSS of the pocketserver subprocess,
for rooms of 2,000 and 20,000 members (25% more state events than members), by a full
join and by a partial-state join.

Run: ``.venv/bin/python tests/bench/bench_big_join.py [--members 2000 20000]
[--modes full partial] [--cache DIR]``.

The peer (tests/federation/big_room_peer.py) generates the room once, signed with its
own key, under ``--cache`` (a temporary directory by default; pass ``--cache`` and
``--port`` to reuse a generated room across runs, since the room's IDs name the peer's
``host:port``). "full" makes the peer ignore ``omit_members`` (the answer then holds
every member, whatever pocketserver asks); "partial" lets it honour the flag.

Each join runs against a fresh pocketserver (127.0.0.2). Printed per join:
- usable: from ``POST /join`` until the room is in /sync and a message was sent;
- full state: until pocketserver's ``current_state`` of the room has as many entries as
  the peer's state (read from its database file);
- peak RSS (``VmHWM``) of the server before the join, when ``POST /join`` returned,
  after the first /sync that shows the room (lazy-loaded members, as clients sync),
  and after full state;
- whether the state pocketserver holds then equals the peer's.
Targets (issue #11): 20,000 members usable <= 10 s, peak RSS <= 120 MB, full <= 60 s.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.federation.big_room_peer import BigRoomPeer, running_big_peer  # noqa: E402
from tests.federation.conftest import pocket_tls_config  # noqa: E402
from tests.federation.synapse_peer import TestCA  # noqa: E402
from tests.harness import running_server  # noqa: E402

CLIENT = "/_matrix/client/v3"


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def held_state(db_path: Path, room_id: str) -> dict[tuple[str, str], str]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        return {
            (t, k): e
            for t, k, e in conn.execute(
                "SELECT type, state_key, event_id FROM current_state WHERE room_id = ?",
                (room_id,),
            )
        }


def one_join(base: Path, ca: TestCA, peer: BigRoomPeer, mode: str, timeout_s: float) -> dict:
    peer.honour_omit_members = mode == "partial"
    config = pocket_tls_config(base / f"pocket-{mode}-{peer.room.members}", ca)
    room_id = peer.room.room_id
    with running_server(config) as pocket:
        pid = pocket.proc.pid
        database = pocket.config["database"]["args"]["database"]  # type: ignore[index]
        db_path = config.parent / str(database)
        info = pocket.register("joiner")
        with pocket.client() as c:
            c.timeout = 900.0
            c.headers["Authorization"] = f"Bearer {info['access_token']}"
            # As Element and other clients sync: members lazy-loaded.
            lazy = '{"room": {"state": {"lazy_load_members": true}}}'
            since = c.get(f"{CLIENT}/sync", params={"filter": lazy}).json()["next_batch"]
            rss_before = vm_hwm_kib(pid)
            t0 = time.monotonic()
            r = c.post(
                f"{CLIENT}/join/{quote(room_id)}",
                params={"server_name": peer.server_name},
                json={},
            )
            join_s = time.monotonic() - t0
            assert r.status_code == 200, r.text
            rss_join = vm_hwm_kib(pid)
            while True:
                params = {"timeout": "1000", "since": since, "filter": lazy}
                answer = c.get(f"{CLIENT}/sync", params=params).json()
                since = answer["next_batch"]
                if room_id in answer.get("rooms", {}).get("join", {}):
                    break
            rss_sync = vm_hwm_kib(pid)
            r = c.put(
                f"{CLIENT}/rooms/{quote(room_id)}/send/m.room.message/t1",
                json={"msgtype": "m.text", "body": "hello big room"},
            )
            assert r.status_code == 200, r.text
            usable_s = time.monotonic() - t0
            deadline = t0 + timeout_s
            want = len(peer.room.full_state())
            held: dict[tuple[str, str], str] = {}
            while time.monotonic() < deadline:
                held = held_state(db_path, room_id)
                if len(held) >= want:
                    break
                time.sleep(0.2)
            full_s = time.monotonic() - t0 if len(held) >= want else None
            rss_after = vm_hwm_kib(pid)
    equal = held == peer.room.full_state()
    return {
        "mode": mode,
        "members": peer.room.members,
        "join_s": join_s,
        "usable_s": usable_s,
        "full_s": full_s,
        "rss_before_mib": rss_before / 1024,
        "rss_join_mib": rss_join / 1024,
        "rss_sync_mib": rss_sync / 1024,
        "rss_peak_mib": rss_after / 1024,
        "state_equal": equal,
        "held": len(held),
        "want": want,
        "omit_asked": peer.stats.omit_members_asked,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--modes", nargs="+", default=["full", "partial"])
    parser.add_argument("--cache", type=Path, help="where generated rooms are kept")
    parser.add_argument("--port", type=int, help="the peer's port (reuse a cached room)")
    parser.add_argument("--timeout", type=float, default=600.0, help="for full state, s")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-big-join-") as tmp:
        base = Path(tmp)
        cache = args.cache or base / "cache"
        ca = TestCA(base / "ca")
        for members in args.members:
            t0 = time.monotonic()
            with running_big_peer(cache, ca, members, members * 5 // 4, port=args.port) as peer:
                print(
                    f"room of {members} members ready in {time.monotonic() - t0:.1f} s",
                    flush=True,
                )
                for mode in args.modes:
                    peer.room.extras.clear()
                    peer.stats.omit_members_asked = 0
                    result = one_join(base, ca, peer, mode, args.timeout)
                    results.append(result)
                    print(result, flush=True)
    print()
    print("members  mode     usable_s  full_s  RSS_MiB: before join  sync  peak  state_equal")
    for r in results:
        full = f"{r['full_s']:.2f}" if r["full_s"] is not None else "never"
        print(
            f"{r['members']:>7}  {r['mode']:<7}  {r['usable_s']:>8.2f}  {full:>6}"
            f"  {r['rss_before_mib']:>15.1f} {r['rss_join_mib']:>5.1f} {r['rss_sync_mib']:>5.1f}"
            f" {r['rss_peak_mib']:>5.1f}  {r['state_equal']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
