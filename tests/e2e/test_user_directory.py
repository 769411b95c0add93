"""POST /user_directory/search: who is visible to whom."""

from __future__ import annotations

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"


def _h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_user_directory_visibility_and_errors(server: RunningServer, new_user: str) -> None:
    names = {k: f"{new_user}{k}" for k in ("alice", "bob", "carol", "dave", "eve")}
    tok = {k: server.register(v)["access_token"] for k, v in names.items()}
    uid = {k: f"@{v}:{server.server_name}" for k, v in names.items()}
    with server.client() as c:
        shared = c.post(f"{V3}/createRoom", headers=_h(tok["alice"]), json={"invite": [uid["bob"]]})
        c.post(f"{V3}/join/{shared.json()['room_id']}", headers=_h(tok["bob"]))
        public = c.post(
            f"{V3}/createRoom", headers=_h(tok["carol"]), json={"preset": "public_chat"}
        )
        assert public.status_code == 200
        private = c.post(f"{V3}/createRoom", headers=_h(tok["dave"]), json={"invite": [uid["eve"]]})
        c.post(f"{V3}/join/{private.json()['room_id']}", headers=_h(tok["eve"]))
        c.put(
            f"{V3}/profile/{uid['bob']}/displayname",
            headers=_h(tok["bob"]),
            json={"displayname": "Bobby Tables"},
        )

        def search(term: str, **extra: object) -> dict[str, object]:
            r = c.post(
                f"{V3}/user_directory/search",
                headers=_h(tok["alice"]),
                json={"search_term": term, **extra},
            )
            assert r.status_code == 200, r.text
            return r.json()

        found = {r["user_id"]: r for r in search(new_user)["results"]}
        assert uid["bob"] in found  # shares a room
        assert uid["carol"] in found  # in a public room
        assert uid["dave"] not in found  # private room Alice is not in
        assert uid["eve"] not in found
        by_name = search("bobby tab")["results"]
        assert [r["user_id"] for r in by_name] == [uid["bob"]]
        assert by_name[0]["display_name"] == "Bobby Tables"
        limited = search(new_user, limit=1)
        assert len(limited["results"]) == 1
        assert limited["limited"] is True
        assert search("%_")["results"] == []  # LIKE wildcards are taken literally
        r = c.post(f"{V3}/user_directory/search", headers=_h(tok["alice"]), json={})
        assert r.json()["errcode"] == "M_MISSING_PARAM"
        r = c.post(
            f"{V3}/user_directory/search",
            headers=_h(tok["alice"]),
            json={"search_term": "x", "limit": "3"},
        )
        assert r.json()["errcode"] == "M_BAD_JSON"
        r = c.post(f"{V3}/user_directory/search", json={"search_term": "x"})
        assert r.status_code == 401


def test_searcher_finds_themself_only_through_open_rooms(
    server: RunningServer, new_user: str
) -> None:
    """As Synapse (SyTest 52user-directory): a private room shared with others does not
    list the searcher to themself; a public room does."""
    names = {k: f"{new_user}self{k}" for k in ("alice", "bob")}
    tok = {k: server.register(v)["access_token"] for k, v in names.items()}
    uid = {k: f"@{v}:{server.server_name}" for k, v in names.items()}
    with server.client() as c:
        room = c.post(
            f"{V3}/createRoom",
            headers=_h(tok["alice"]),
            json={"preset": "private_chat", "invite": [uid["bob"]]},
        ).json()["room_id"]
        assert c.post(f"{V3}/join/{room}", headers=_h(tok["bob"])).status_code == 200

        def found(term: str) -> set[str]:
            r = c.post(
                f"{V3}/user_directory/search",
                headers=_h(tok["bob"]),
                json={"search_term": term},
            )
            assert r.status_code == 200, r.text
            return {res["user_id"] for res in r.json()["results"]}

        assert found(names["bob"]) == set()  # not themself, through a private room
        assert found(names["alice"]) == {uid["alice"]}  # the other member, yes
        r = c.put(
            f"{V3}/rooms/{room}/state/m.room.join_rules",
            headers=_h(tok["alice"]),
            json={"join_rule": "public"},
        )
        assert r.status_code == 200
        assert found(names["bob"]) == {uid["bob"]}  # now in a public room
