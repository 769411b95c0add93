"""Unread counts come in the same /sync response as their events, also while events
keep arriving (push.md "Server behaviour"), through the real server."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator

import pytest

from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
_txns = itertools.count(1)
MESSAGES = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = make_config(
        tmp_path_factory.mktemp("push_counts"),
        rc_message={"per_second": 1000, "burst_count": 1000},
    )
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


def test_every_response_counts_the_events_it_brings(server: RunningServer, new_user: str) -> None:
    a, b, c = (server.register(new_user + x) for x in "abc")
    with server.client() as http:
        r = http.post(f"{V3}/createRoom", headers=_auth(a), json={"preset": "public_chat"})
        room = r.json()["room_id"]
        for user in (b, c):
            assert http.post(f"{V3}/join/{room}", headers=_auth(user)).status_code == 200
        since = http.get(f"{V3}/sync", headers=_auth(b)).json()["next_batch"]

    def send(user: dict[str, str], n: int) -> None:
        with server.client() as http:
            for _ in range(n):
                r = http.put(
                    f"{V3}/rooms/{room}/send/m.room.message/t{next(_txns)}",
                    headers=_auth(user),
                    json={"msgtype": "m.text", "body": "hello"},
                )
                assert r.status_code == 200, r.text

    # Two senders at once, so evaluation has a queue while b's long-polls answer.
    senders = [threading.Thread(target=send, args=(u, MESSAGES // 2)) for u in (a, c)]
    for t in senders:
        t.start()
    seen = last_count = 0
    flt = json.dumps({"room": {"timeline": {"limit": 100}}})
    with server.client() as http:
        while seen < MESSAGES:
            body = http.get(
                f"{V3}/sync",
                headers=_auth(b),
                params={"since": since, "timeout": "10000", "filter": flt},
                timeout=30,
            ).json()
            since = body["next_batch"]
            entry = body["rooms"]["join"].get(room)
            if entry is None:
                continue
            assert not entry["timeline"]["limited"]
            seen += len(entry["timeline"]["events"])
            # b never reads: every message notifies (.m.rule.message). Each message's
            # count comes with it; counts of events committed after the response's
            # position may come early (the counters are not per position).
            count = entry["unread_notifications"]["notification_count"]
            assert count >= seen
            last_count = count
    for t in senders:
        t.join(30)
    assert seen == MESSAGES
    assert last_count == MESSAGES
