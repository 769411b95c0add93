"""Room version 3 event IDs are standard base64 and may hold "/" (sent as %2F, decoded
before routing): every route that takes an event ID as its last segment, and redact's
event ID before the transaction ID, must still find the event."""

from __future__ import annotations

import itertools
from urllib.parse import quote

import httpx

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
_txn = itertools.count()


def _send(c: httpx.Client, auth: dict[str, str], room: str) -> str:
    r = c.put(
        f"{V3}/rooms/{room}/send/m.room.message/t{next(_txn)}",
        headers=auth,
        json={"msgtype": "m.text", "body": "hi"},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def test_event_ids_with_a_slash(server: RunningServer, new_user: str) -> None:
    auth = {"Authorization": f"Bearer {server.register(new_user)['access_token']}"}
    with server.client() as c:
        r = c.post(f"{V3}/createRoom", headers=auth, json={"room_version": "3"})
        room = r.json()["room_id"]
        # About 1 in 2 event IDs holds a "/": 64 tries miss with odds of 2^-64.
        event_id = next(e for e in (_send(c, auth, room) for _ in range(64)) if "/" in e)
        enc = quote(event_id, safe="")
        assert "%2F" in enc
        r = c.get(f"{V3}/rooms/{room}/event/{enc}", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["event_id"] == event_id
        r = c.get(f"{V3}/rooms/{room}/context/{enc}", headers=auth, params={"limit": "1"})
        assert r.status_code == 200, r.text
        assert r.json()["event"]["event_id"] == event_id
        r = c.post(f"{V3}/rooms/{room}/receipt/m.read/{enc}", headers=auth, json={})
        assert r.status_code == 200, r.text
        r = c.post(f"{V3}/rooms/{room}/report/{enc}", headers=auth, json={"reason": "test"})
        assert r.status_code == 200, r.text
        r = c.put(f"{V3}/rooms/{room}/redact/{enc}/redact{next(_txn)}", headers=auth, json={})
        assert r.status_code == 200, r.text
        redaction_id = r.json()["event_id"]
        redacted = c.get(f"{V3}/rooms/{room}/event/{enc}", headers=auth).json()
        assert redacted["content"] == {}
        assert redacted["unsigned"]["redacted_because"]["redacts"] == event_id
        assert redacted["unsigned"]["redacted_by"] == redaction_id  # as Synapse
