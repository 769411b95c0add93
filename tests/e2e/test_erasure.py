"""Deactivation with ``erase: true``: the user's messages are shown redacted to those
who were not in the room when they were sent; the original members still see them
(as Synapse; SyTest 30rooms/32erasure.pl)."""

from __future__ import annotations

import itertools

import httpx

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
_names = itertools.count(1)


def _user(server: RunningServer) -> tuple[str, dict[str, str]]:
    name = f"erase{next(_names)}"
    token = server.register(name)["access_token"]
    return f"@{name}:{server.server_name}", {"Authorization": f"Bearer {token}"}


def _message(c: httpx.Client, h: dict[str, str], room: str, event_id: str) -> dict:
    """The event as /messages, /event and /sync show it to the user."""
    r = c.get(f"{V3}/rooms/{room}/messages", headers=h, params={"dir": "b", "limit": 20})
    assert r.status_code == 200, r.text
    (found,) = [e for e in r.json()["chunk"] if e["event_id"] == event_id]
    single = c.get(f"{V3}/rooms/{room}/event/{event_id}", headers=h)
    assert single.status_code == 200
    assert single.json()["content"] == found["content"]
    sync = c.get(f"{V3}/sync", headers=h).json()
    timeline = sync["rooms"]["join"][room]["timeline"]["events"]
    assert [e["content"] for e in timeline if e["event_id"] == event_id] == [found["content"]]
    return dict(found)


def _deactivate(c: httpx.Client, user_id: str, h: dict[str, str], *, erase: bool) -> None:
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": "correct horse",
    }
    r = c.post(f"{V3}/account/deactivate", headers=h, json={"auth": auth, "erase": erase})
    assert r.status_code == 200, r.text


def test_erased_users_messages_are_redacted_for_later_joiners(server: RunningServer) -> None:
    with server.client() as c:
        creator, ch = _user(server)
        member, mh = _user(server)
        joiner, jh = _user(server)
        kept, kh = _user(server)  # deactivated without erasure
        room = c.post(f"{V3}/createRoom", headers=ch, json={"preset": "public_chat"})
        room_id = room.json()["room_id"]
        for h in (mh, kh):
            assert c.post(f"{V3}/join/{room_id}", headers=h).status_code == 200

        def send(h: dict[str, str], body: str) -> str:
            r = c.put(
                f"{V3}/rooms/{room_id}/send/m.room.message/{body}",
                headers=h,
                json={"msgtype": "m.text", "body": body},
            )
            assert r.status_code == 200, r.text
            return str(r.json()["event_id"])

        erased_id = send(ch, "body1")
        kept_id = send(kh, "body2")
        assert c.post(f"{V3}/join/{room_id}", headers=jh).status_code == 200
        assert _message(c, jh, room_id, erased_id)["content"]["body"] == "body1"

        _deactivate(c, creator, ch, erase=True)
        _deactivate(c, kept, kh, erase=False)
        # The original member still sees it; the later joiner sees it redacted.
        assert _message(c, mh, room_id, erased_id)["content"]["body"] == "body1"
        assert _message(c, jh, room_id, erased_id)["content"] == {}
        # Deactivated without erasure: nothing changes for anyone.
        assert _message(c, jh, room_id, kept_id)["content"]["body"] == "body2"
        assert member != joiner
