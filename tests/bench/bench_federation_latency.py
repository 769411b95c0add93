"""Federation latency: a message sent on one server until it appears in /sync on the
other (issue 10, "Measure and report").

Run: ``.venv/bin/python tests/bench/bench_federation_latency.py [--messages 200]``.

Three real servers on loopback: pocketserver (127.0.0.2), Synapse (127.0.0.1) and a
second Synapse (127.0.0.3) (tests/bench/federation_rig.py). A room on pocketserver that
a Synapse user joined by alias measures pocketserver -> Synapse and Synapse ->
pocketserver; a room on one Synapse that the other Synapse's user joined measures
Synapse <-> Synapse on the same machine, the comparison.

Each message is timed from just before the sender's ``PUT /send`` until the receiving
user's long-poll ``/sync`` (already waiting from the previous position) returns it; one
message at a time, after a few unmeasured warm-up messages. Printed: p50, p99 and max
per direction. Target: pocketserver's directions no slower than Synapse <-> Synapse at
p50 (p99 on a machine shared with other work is printed, not judged).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.federation_rig import (  # noqa: E402
    Client,
    has_body,
    pct,
    pocket_user,
    room_with_remote,
    servers,
    synapse_user,
)

WARM_UP = 5


def measure(sender: Client, receiver: Client, room_id: str, n: int, label: str) -> list[float]:
    """Send ``n`` messages one at a time; the seconds each took to reach ``receiver``."""
    for i in range(WARM_UP):
        body = f"{label} warm-up {i}"
        sender.send(room_id, body)
        receiver.wait_for(has_body(body))
    receiver.sync_to_now()
    times: list[float] = []
    for i in range(n):
        body = f"{label} {i}"
        started = time.perf_counter()
        sender.send(room_id, body)
        receiver.wait_for(has_body(body))
        times.append(time.perf_counter() - started)
    return times


def row(label: str, times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return (
        f"  {label:<28} p50 {pct(ms, 50):7.1f} ms   p99 {pct(ms, 99):7.1f} ms"
        f"   max {max(ms):7.1f} ms   (n={len(ms)})"
    )


def bench(work: Path, n: int) -> bool:
    with servers(work) as s:
        assert s.pocket is not None
        assert s.synapse2 is not None
        alice = pocket_user(s.pocket, "alice")
        bob = synapse_user(s.synapse, "bob")
        carol = synapse_user(s.synapse2, "carol")
        try:
            pocket_room = room_with_remote(alice, s.pocket.server_name, bob, "latency")
            bob.sync_to_now()
            alice.sync_to_now()
            synapse_room = room_with_remote(bob, s.synapse.server_name, carol, "latency")
            carol.sync_to_now()
            results = {
                "pocketserver -> Synapse": measure(alice, bob, pocket_room, n, "p2s"),
                "Synapse -> pocketserver": measure(bob, alice, pocket_room, n, "s2p"),
                "Synapse -> Synapse": measure(bob, carol, synapse_room, n, "s2s"),
                "Synapse <- Synapse": measure(carol, bob, synapse_room, n, "s2s-back"),
            }
        finally:
            for c in (alice, bob, carol):
                c.close()
    print(f"message sent until seen in the other server's /sync, {n} messages one at a time:")
    for label, times in results.items():
        print(row(label, times))
    reference = pct(results["Synapse -> Synapse"] + results["Synapse <- Synapse"], 50)
    ok = all(
        pct(results[label], 50) <= reference * 1.1
        for label in ("pocketserver -> Synapse", "Synapse -> pocketserver")
    )
    print(
        f"target: pocketserver's directions at p50 within 10% of Synapse <-> Synapse "
        f"({reference * 1000:.1f} ms) or faster"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pocket-bench-fed-") as tmp:
        ok = bench(Path(tmp), args.messages)
    print("OK" if ok else "SLOWER THAN TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
