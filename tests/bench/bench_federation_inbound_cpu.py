"""Server CPU per inbound PDU: a peer sends 2,000 messages into a room with 50 local
members (issue 10, "Measure and report").

Run: ``.venv/bin/python tests/bench/bench_federation_inbound_cpu.py [--messages 2000]
[--members 50] [--concurrency 4]``.

The sending peer is a real Synapse (127.0.0.1); a user of it joins, by alias, a room
that has 50 local members on the receiving server and sends the messages through its
Synapse's client API (``--concurrency`` at a time). Receivers, one after the other:

1. pocketserver (127.0.0.2);
2. a second Synapse (127.0.0.3), the comparison (a pocketserver user cannot send into
   a Synapse room before pocketserver joins remote rooms, so the sender is Synapse in
   both cases and only the receiving server's CPU is counted).

Measured on the receiving server's process only: user + system CPU (/proc/PID/stat)
from the first message sent until the last is visible to a local member, divided by
the number of messages; and the wall time until then. Visibility is polled once a
second with a one-event ``/messages`` of a local member (after the sender has finished,
its newest event must be the last one sent), and confirmed afterwards by paging through
the room's history: every message must be there on pocketserver (Synapse, by design,
drops staged PDUs past 100 waiting in a room and leaves a gap that backfill fills when a
client pages back: its count is printed, not judged). Target: pocketserver's CPU per
PDU no more than Synapse's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.federation_rig import (  # noqa: E402
    Client,
    cpu_s,
    pocket_user,
    quiesce,
    room_with_remote,
    servers,
    synapse_user,
)


@dataclass
class Figures:
    cpu_s: float
    wall_s: float
    send_s: float
    visible: int


def count_messages(member: Client, room_id: str, sender: str) -> int:
    """The numbered messages of ``sender`` in the room, paging back through its history
    until there is no ``end`` token (Synapse may answer an empty page that still has one:
    all its events were filtered out)."""
    seen = 0
    token: str | None = None
    for _ in range(1000):
        params: dict[str, object] = {"dir": "b", "limit": 500}
        if token:
            params["from"] = token
        page = member.call("GET", f"/rooms/{quote(room_id)}/messages", **params)
        seen += sum(
            1
            for ev in page["chunk"]
            if ev["sender"] == sender
            and str(ev.get("content", {}).get("body", "")).startswith("inbound ")
        )
        next_token = page.get("end")
        if not next_token or next_token == token:
            break
        token = next_token
    return seen


def newest_body(member: Client, room_id: str) -> str | None:
    page = member.call("GET", f"/rooms/{quote(room_id)}/messages", dir="b", limit=1)
    for ev in page["chunk"]:
        return str(ev.get("content", {}).get("body"))
    return None


def send_all(sender: Client, room_id: str, n: int, concurrency: int) -> float:
    """Send ``n`` messages, ``concurrency`` at a time (httpx clients are thread-safe), then
    one last message; the seconds taken."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda i: sender.send(room_id, f"inbound {i}"), range(n)))
    sender.send(room_id, "the last one")
    return time.perf_counter() - started


def measure(
    pid: int, sender: Client, member: Client, room_id: str, n: int, concurrency: int
) -> Figures:
    quiesce(pid)
    cpu_before = cpu_s(pid)
    started = time.perf_counter()
    send_s = send_all(sender, room_id, n, concurrency)
    while newest_body(member, room_id) != "the last one":
        if time.perf_counter() - started > 600:
            raise RuntimeError("the messages did not arrive in 10 minutes")
        time.sleep(1.0)
    wall_s = time.perf_counter() - started
    used = cpu_s(pid) - cpu_before
    return Figures(used, wall_s, send_s, count_messages(member, room_id, sender.user_id))


def add_members(
    owner: Client, room_id: str, make_user: Callable[[str], Client], count: int
) -> None:
    """``count - 1`` more local users join the owner's room (the owner is the first)."""
    for i in range(1, count):
        member = make_user(f"member{i}")
        try:
            member.call("POST", f"/join/{quote(room_id)}", {})
        finally:
            member.close()


def report(label: str, n: int, f: Figures) -> None:
    print(f"  {label}:")
    print(
        f"    CPU {f.cpu_s:.2f} s = {f.cpu_s / (n + 1) * 1000:.2f} ms per inbound PDU"
        f" ({n + 1} with the last one);"
        f" all visible after {f.wall_s:.1f} s ({n / f.wall_s:.0f}/s;"
        f" the sender took {f.send_s:.1f} s); {f.visible}/{n} in the room's history"
    )


def bench(work: Path, n: int, members: int, concurrency: int) -> bool:
    with servers(work) as s:
        assert s.pocket is not None
        assert s.synapse2 is not None
        pocket, peer2 = s.pocket, s.synapse2
        bob = synapse_user(s.synapse, "bob")
        alice = pocket_user(pocket, "alice")
        carol = synapse_user(peer2, "carol")
        try:
            pocket_room = room_with_remote(alice, pocket.server_name, bob, "inbound")
            add_members(alice, pocket_room, lambda name: pocket_user(pocket, name), members)
            synapse_room = room_with_remote(carol, peer2.server_name, bob, "inbound")
            add_members(carol, synapse_room, lambda name: synapse_user(peer2, name), members)
            on_pocket = measure(pocket.proc.pid, bob, alice, pocket_room, n, concurrency)
            on_synapse = measure(peer2.proc.pid, bob, carol, synapse_room, n, concurrency)
        finally:
            for c in (alice, bob, carol):
                c.close()
    print(
        f"{n} messages from a Synapse user into a room with {members} local members"
        f" ({concurrency} sends at a time), receiving server's CPU (user+sys):"
    )
    report("pocketserver receiving", n, on_pocket)
    report("Synapse receiving (comparison)", n, on_synapse)
    if on_synapse.visible < n:
        # Synapse drops staged PDUs of a room when 100 or more wait
        # (prune_staged_events_in_room), keeping the newest: the rest are a gap in its
        # history until a client pages back into it and Synapse backfills.
        print(
            "  (the receiving Synapse dropped what waited in its staging area past 100 PDUs"
            " of the room, as it does by design; its CPU figure is for less work)"
        )
    ratio = on_pocket.cpu_s / on_synapse.cpu_s
    print(f"  pocketserver / Synapse CPU per PDU: {ratio:.2f} (target <= 1)")
    print(f"  pocketserver kept every message: {'yes' if on_pocket.visible == n else 'NO'}")
    return ratio <= 1.0 and on_pocket.visible == n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pocket-bench-fed-") as tmp:
        ok = bench(Path(tmp), args.messages, args.members, args.concurrency)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
