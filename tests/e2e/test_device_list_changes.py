"""A new login (a new device) and a device rename change the user's device list: the
user and those sharing a room with them see it in /sync ``device_lists.changed`` and
in /keys/changes (end_to_end_encryption.md "Tracking the device list for a user")."""

from __future__ import annotations

import itertools

import httpx

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
_names = itertools.count(1)


def _user(server: RunningServer) -> tuple[str, str, dict[str, str]]:
    name = f"dl{next(_names)}"
    token = server.register(name)["access_token"]
    return name, f"@{name}:{server.server_name}", {"Authorization": f"Bearer {token}"}


def _sync(c: httpx.Client, h: dict[str, str], since: str | None = None) -> dict:
    """A sync that does not wait: the change is published before its request answers."""
    params = {"timeout": "0", **({"since": since} if since else {})}
    r = c.get(f"{V3}/sync", headers=h, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_new_login_and_rename_change_the_device_list(server: RunningServer) -> None:
    with server.client() as c:
        _, alice, ah = _user(server)
        bob_name, bob, bh = _user(server)
        _, carol, ch = _user(server)  # shares no room with Bob
        room = c.post(f"{V3}/createRoom", headers=ah, json={"preset": "public_chat"})
        assert c.post(f"{V3}/join/{room.json()['room_id']}", headers=bh).status_code == 200
        tokens = {who: _sync(c, h)["next_batch"] for who, h in (("a", ah), ("b", bh), ("c", ch))}

        r = server.login(bob_name, device_id="NEWPHONE")
        assert r.status_code == 200
        for who, h in (("a", ah), ("b", bh)):
            body = _sync(c, h, tokens[who])
            assert body["device_lists"]["changed"] == [bob], who
            tokens[who] = body["next_batch"]
        assert _sync(c, ch, tokens["c"])["device_lists"]["changed"] == []
        before = tokens["a"]

        r = c.put(f"{V3}/devices/NEWPHONE", headers=bh, json={"display_name": "Bob's phone"})
        assert r.status_code == 200
        body = _sync(c, ah, tokens["a"])
        assert body["device_lists"]["changed"] == [bob]
        r = c.get(
            f"{V3}/keys/changes",
            headers=ah,
            params={"from": before, "to": body["next_batch"]},
        )
        assert r.status_code == 200
        assert r.json()["changed"] == [bob]
        # A rename of a device that is not there changes nothing.
        r = c.put(f"{V3}/devices/NOSUCH", headers=bh, json={"display_name": "x"})
        assert r.status_code == 404
        assert _sync(c, ah, body["next_batch"])["device_lists"]["changed"] == []
        assert alice != carol


def test_an_invite_or_knock_puts_the_user_in_changed(server: RunningServer) -> None:
    """Alice invites Bob: her next /sync lists Bob in ``device_lists.changed`` (as
    Synapse: a client encrypting for invited members needs their devices; SyTest
    08-cross-signing waits for it); Bob's own sync lists nobody for the invite. Carol's
    knock lists her for Alice too."""
    with server.client() as c:
        _, _, ah = _user(server)
        _, bob, bh = _user(server)
        _, carol, ch = _user(server)
        room = c.post(f"{V3}/createRoom", headers=ah, json={"preset": "private_chat"})
        room_id = room.json()["room_id"]
        r = c.put(
            f"{V3}/rooms/{room_id}/state/m.room.join_rules",
            headers=ah,
            json={"join_rule": "knock"},
        )
        assert r.status_code == 200, r.text
        a_token = _sync(c, ah)["next_batch"]
        b_token = _sync(c, bh)["next_batch"]
        r = c.post(f"{V3}/rooms/{room_id}/invite", headers=ah, json={"user_id": bob})
        assert r.status_code == 200, r.text
        body = _sync(c, ah, a_token)
        assert body["device_lists"]["changed"] == [bob]
        assert _sync(c, bh, b_token)["device_lists"]["changed"] == []
        r = c.post(f"{V3}/knock/{room_id}", headers=ch, json={})
        assert r.status_code == 200, r.text
        assert _sync(c, ah, body["next_batch"])["device_lists"]["changed"] == [carol]
