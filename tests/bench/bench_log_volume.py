"""Log bytes per 1,000 requests of a client's everyday mix, default config vs. every
request at INFO (the behaviour before issue #15).

Run: ``.venv/bin/python tests/bench/bench_log_volume.py [--requests 5000]``.
The mix is what a connected client does: long-poll /sync (short timeouts here), send,
typing, read receipts, whoami, and now and then a missing account-data key (a 404, as
clients ask at start).
Measured before #15 under a kill -9 load loop: 255 MB over 1.19 million requests, about
214 bytes per request (214 KB per 1,000). Target: the default writes under a tenth of
what logging every request writes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness import make_config, running_server  # noqa: E402

TARGET_RATIO = 0.1


def measure(access_log_level: str, requests: int) -> tuple[float, int]:
    """(log bytes per 1,000 requests after start-up, requests made)."""
    with tempfile.TemporaryDirectory() as tmp:
        log_file = Path(tmp) / "pocket.log"
        config = make_config(
            Path(tmp),
            access_log_level=access_log_level,
            log_file=str(log_file),
            rc_message={"per_second": 1000, "burst_count": 1000},
        )
        with running_server(config, log_to=log_file) as s:
            token = s.register("bench")["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            with s.client() as c:
                room = c.post("/_matrix/client/v3/createRoom", json={}, headers=auth).json()[
                    "room_id"
                ]
                since = c.get("/_matrix/client/v3/sync", headers=auth).json()["next_batch"]
                start = log_file.stat().st_size
                made = cycles = 0
                event_id = ""
                while made < requests:
                    base = f"/_matrix/client/v3/rooms/{room}"
                    r = c.put(
                        f"{base}/send/m.room.message/{uuid.uuid4().hex}",
                        json={"msgtype": "m.text", "body": "hello"},
                        headers=auth,
                    )
                    assert r.status_code == 200, r.text
                    event_id = r.json()["event_id"]
                    c.put(
                        f"{base}/typing/@bench:test.local",
                        json={"typing": True, "timeout": 10000},
                        headers=auth,
                    )
                    c.post(f"{base}/receipt/m.read/{event_id}", json={}, headers=auth)
                    r = c.get(
                        "/_matrix/client/v3/sync",
                        params={"since": since, "timeout": "50"},
                        headers=auth,
                    )
                    since = r.json()["next_batch"]
                    c.get("/_matrix/client/v3/account/whoami", headers=auth)
                    made += 5
                    cycles += 1
                    if cycles % 50 == 0:  # now and then, as a client (re)starting does
                        c.get(
                            "/_matrix/client/v3/user/@bench:test.local/account_data/im.x",
                            headers=auth,
                        )
                        made += 1
                written = log_file.stat().st_size - start
    return written * 1000 / made, made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    default, n = measure("DEBUG", args.requests)
    every, _ = measure("INFO", args.requests)
    print(f"requests per run: {n} (send, typing, receipt, sync, whoami; a 404 every ~250)")
    print(f"default config (access_log_level DEBUG): {default / 1024:8.1f} KiB per 1,000 requests")
    print(f"every request at INFO (before #15):       {every / 1024:8.1f} KiB per 1,000 requests")
    ratio = default / every if every else 0.0
    verdict = "OK" if ratio <= TARGET_RATIO else "OVER"
    print(f"ratio {ratio:.3f} (target <= {TARGET_RATIO}): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
