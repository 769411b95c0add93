"""A room upgrade carries each local member's m.direct entry, tags and room push rules
over to the new room (as Synapse); nobody else's account data changes."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_upgrade_carries_member_state(server: RunningServer, new_user: str) -> None:
    a = server.register(new_user)
    b = server.register(f"{new_user}-b")
    outsider = server.register(f"{new_user}-c")
    A, B, C = _auth(a["access_token"]), _auth(b["access_token"]), _auth(outsider["access_token"])
    with server.client() as c:
        old = c.post(f"{V3}/createRoom", headers=A, json={"invite": [b["user_id"]]}).json()[
            "room_id"
        ]
        assert c.post(f"{V3}/rooms/{old}/join", headers=B, json={}).status_code == 200

        def direct(user: dict[str, str], auth: dict[str, str]) -> httpx.Response:
            return c.get(f"{V3}/user/{quote(user['user_id'])}/account_data/m.direct", headers=auth)

        for user, auth in ((a, A), (outsider, C)):
            r = c.put(
                f"{V3}/user/{quote(user['user_id'])}/account_data/m.direct",
                headers=auth,
                json={b["user_id"]: [old], "@x:elsewhere": ["!y:elsewhere"]},
            )
            assert r.status_code == 200
        r = c.put(
            f"{V3}/user/{quote(a['user_id'])}/rooms/{old}/tags/u.work",
            headers=A,
            json={"order": 0.25},
        )
        assert r.status_code == 200
        r = c.put(f"{V3}/pushrules/global/room/{quote(old)}", headers=B, json={"actions": []})
        assert r.status_code == 200, r.text
        r = c.put(
            f"{V3}/pushrules/global/override/quiet",
            headers=B,
            json={
                "actions": [],
                "conditions": [{"kind": "event_match", "key": "room_id", "pattern": old}],
            },
        )
        assert r.status_code == 200, r.text
        r = c.post(f"{V3}/rooms/{old}/upgrade", headers=A, json={"new_version": "11"})
        assert r.status_code == 200, r.text
        new = r.json()["replacement_room"]

        assert direct(a, A).json() == {b["user_id"]: [old, new], "@x:elsewhere": ["!y:elsewhere"]}
        # Not a member of the old room: nothing of theirs changes.
        assert direct(outsider, C).json()[b["user_id"]] == [old]
        tags = c.get(f"{V3}/user/{quote(a['user_id'])}/rooms/{new}/tags", headers=A).json()
        assert tags["tags"] == {"u.work": {"order": 0.25}}
        rules = c.get(f"{V3}/pushrules/", headers=B).json()["global"]
        assert new in [rule["rule_id"] for rule in rules["room"]]
        assert old in [rule["rule_id"] for rule in rules["room"]]  # the old one stays
        overrides = {r["rule_id"]: r for r in rules["override"]}
        # As Synapse: the copy is named after the new room; the old rule stays as it was.
        assert overrides[new]["conditions"][0]["pattern"] == new
        assert overrides["quiet"]["conditions"][0]["pattern"] == old
