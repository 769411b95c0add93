"""Server-side key backups through the real server: the full lifecycle with exact
statuses and errcodes (client-server API "Server-side key backups")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
ALG = "m.megolm_backup.v1.curve25519-aes-sha2"
ROOM = "!room:test.local"
ROOM2 = "!other:test.local"


def _q(s: str) -> str:
    return quote(s, safe="")


def _key(verified: bool = False, first: int = 0, forwarded: int = 0, tag: str = "x") -> dict:
    return {
        "first_message_index": first,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"},
    }


@pytest.fixture
def http(server: RunningServer, new_user: str) -> Iterator[httpx.Client]:
    info = server.register(new_user)
    with httpx.Client(
        base_url=server.base_url + V3,
        timeout=30.0,
        headers={"Authorization": f"Bearer {info['access_token']}"},
    ) as c:
        yield c


def _ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def _err(r: httpx.Response, status: int, errcode: str) -> dict[str, Any]:
    assert (r.status_code, r.json().get("errcode")) == (status, errcode), r.text
    return dict(r.json())


def _create(http: httpx.Client, auth_data: dict | None = None) -> str:
    body = _ok(
        http.post("/room_keys/version", json={"algorithm": ALG, "auth_data": auth_data or {}})
    )
    return str(body["version"])


def test_full_lifecycle(http: httpx.Client) -> None:
    _err(http.get("/room_keys/version"), 404, "M_NOT_FOUND")
    version = _create(http, {"public_key": "abc", "signatures": {}})
    current = _ok(http.get("/room_keys/version"))
    assert current == {
        "algorithm": ALG,
        "auth_data": {"public_key": "abc", "signatures": {}},
        "count": 0,
        "etag": current["etag"],
        "version": version,
    }
    assert _ok(http.get(f"/room_keys/version/{version}")) == current
    etag0 = current["etag"]

    # One key, then the per-room and bulk forms.
    put = _ok(
        http.put(
            f"/room_keys/keys/{_q(ROOM)}/s1",
            params={"version": version},
            json=_key(first=5, tag="a"),
        )
    )
    assert put["count"] == 1
    assert put["etag"] != etag0
    etag1 = put["etag"]
    put = _ok(
        http.put(
            f"/room_keys/keys/{_q(ROOM)}",
            params={"version": version},
            json={"sessions": {"s2": _key(), "s1": _key(first=9, tag="worse")}},
        )
    )
    assert put["count"] == 2
    put = _ok(
        http.put(
            "/room_keys/keys",
            params={"version": version},
            json={"rooms": {ROOM2: {"sessions": {"s3": _key(True)}}}},
        )
    )
    assert put["count"] == 3
    info = _ok(http.get("/room_keys/version"))
    assert (info["count"], info["etag"]) == (3, put["etag"])
    assert put["etag"] != etag1

    # Replacement rules: the worse upload above did not replace s1.
    assert _ok(http.get(f"/room_keys/keys/{_q(ROOM)}/s1", params={"version": version})) == _key(
        first=5, tag="a"
    )
    # Nothing better: etag unchanged.
    same = _ok(
        http.put(
            f"/room_keys/keys/{_q(ROOM)}/s1",
            params={"version": version},
            json=_key(first=5, tag="z"),
        )
    )
    assert same == {"etag": put["etag"], "count": 3}
    # Verified wins over a lower index.
    better = _ok(
        http.put(
            f"/room_keys/keys/{_q(ROOM)}/s1",
            params={"version": version},
            json=_key(True, 7, 5, "v"),
        )
    )
    assert better["count"] == 3
    assert better["etag"] != same["etag"]
    # Then a lower forwarded_count with the same index and verification wins.
    _ok(
        http.put(
            f"/room_keys/keys/{_q(ROOM)}/s1",
            params={"version": version},
            json=_key(True, 7, 3, "f3"),
        )
    )
    _ok(
        http.put(
            f"/room_keys/keys/{_q(ROOM)}/s1",
            params={"version": version},
            json=_key(True, 7, 1, "f1"),
        )
    )
    _ok(
        http.put(
            f"/room_keys/keys/{_q(ROOM)}/s1",
            params={"version": version},
            json=_key(True, 7, 2, "f2"),
        )
    )
    assert (
        _ok(http.get(f"/room_keys/keys/{_q(ROOM)}/s1", params={"version": version}))[
            "session_data"
        ]["ciphertext"]
        == "f1"
    )

    everything = _ok(http.get("/room_keys/keys", params={"version": version}))
    assert everything == {
        "rooms": {
            ROOM: {"sessions": {"s1": _key(True, 7, 1, "f1"), "s2": _key()}},
            ROOM2: {"sessions": {"s3": _key(True)}},
        }
    }
    assert _ok(http.get(f"/room_keys/keys/{_q(ROOM2)}", params={"version": version})) == {
        "sessions": {"s3": _key(True)}
    }
    assert _ok(
        http.get(f"/room_keys/keys/{_q('!none:test.local')}", params={"version": version})
    ) == {"sessions": {}}
    _err(
        http.get(f"/room_keys/keys/{_q(ROOM)}/nope", params={"version": version}),
        404,
        "M_NOT_FOUND",
    )

    # Updating auth_data.
    _ok(http.put(f"/room_keys/version/{version}", json={"algorithm": ALG, "auth_data": {"k": 2}}))
    _ok(
        http.put(
            f"/room_keys/version/{version}",
            json={"algorithm": ALG, "auth_data": {"k": 3}, "version": version},
        )
    )
    assert _ok(http.get("/room_keys/version"))["auth_data"] == {"k": 3}

    # Deleting keys: one, a room, all.
    d = _ok(http.request("DELETE", f"/room_keys/keys/{_q(ROOM)}/s2", params={"version": version}))
    assert d["count"] == 2
    d = _ok(http.request("DELETE", f"/room_keys/keys/{_q(ROOM)}", params={"version": version}))
    assert d["count"] == 1
    d = _ok(http.request("DELETE", "/room_keys/keys", params={"version": version}))
    assert d["count"] == 0
    assert _ok(http.get("/room_keys/keys", params={"version": version})) == {"rooms": {}}

    # Deleting the version (no UIA needed); deleting it again succeeds.
    _ok(http.delete(f"/room_keys/version/{version}"))
    _ok(http.delete(f"/room_keys/version/{version}"))
    _err(http.get(f"/room_keys/version/{version}"), 404, "M_NOT_FOUND")
    _err(http.get("/room_keys/version"), 404, "M_NOT_FOUND")
    _err(http.get("/room_keys/keys", params={"version": version}), 404, "M_NOT_FOUND")
    _err(http.request("DELETE", "/room_keys/keys", params={"version": version}), 404, "M_NOT_FOUND")
    _err(
        http.put(f"/room_keys/keys/{_q(ROOM)}/s1", params={"version": version}, json=_key()),
        404,
        "M_NOT_FOUND",
    )
    # A new version gets a new number.
    assert _create(http) != version


def test_wrong_version_errors(http: httpx.Client) -> None:
    old = _create(http)
    _ok(http.put(f"/room_keys/keys/{_q(ROOM)}/s1", params={"version": old}, json=_key()))
    new = _create(http)
    assert _ok(http.get("/room_keys/version"))["version"] == new
    for version in (old, "999", "bogus"):
        for r in (
            http.put(f"/room_keys/keys/{_q(ROOM)}/s1", params={"version": version}, json=_key()),
            http.put(
                f"/room_keys/keys/{_q(ROOM)}", params={"version": version}, json={"sessions": {}}
            ),
            http.put("/room_keys/keys", params={"version": version}, json={"rooms": {}}),
        ):
            body = _err(r, 403, "M_WRONG_ROOM_KEYS_VERSION")
            assert body["current_version"] == new
    # The old version is still readable.
    assert _ok(http.get(f"/room_keys/keys/{_q(ROOM)}/s1", params={"version": old})) == _key()
    assert _ok(http.get(f"/room_keys/version/{old}"))["count"] == 1


def test_opaque_string_auth_data(http: httpx.Client) -> None:
    """SyTest 41end-to-end-keys/07-backup sends MSC1219's opaque string as auth_data;
    Synapse keeps it, and so do we (create, read back, update)."""
    version = _ok(
        http.post("/room_keys/version", json={"algorithm": ALG, "auth_data": "anopaquestring"})
    )["version"]
    assert _ok(http.get("/room_keys/version"))["auth_data"] == "anopaquestring"
    _ok(
        http.put(
            f"/room_keys/version/{version}",
            json={"algorithm": ALG, "auth_data": "another", "version": version},
        )
    )
    assert _ok(http.get(f"/room_keys/version/{version}"))["auth_data"] == "another"
    key = {**_key(first=3), "session_data": "anopaquestring"}
    v = {"version": version}
    _ok(http.put("/room_keys/keys/!abcd/1234", params=v, json=key))
    assert _ok(http.get("/room_keys/keys/!abcd/1234", params=v)) == key
    for bad in (5, ["x"], None):
        r = http.put("/room_keys/keys/!abcd/1234", params=v, json={**key, "session_data": bad})
        _err(r, 400, "M_BAD_JSON")


def test_bad_requests(server: RunningServer, http: httpx.Client) -> None:
    for body, errcode in (
        ({"auth_data": {}}, "M_MISSING_PARAM"),
        ({"algorithm": ALG}, "M_MISSING_PARAM"),
        ({"algorithm": ALG, "auth_data": ["x"]}, "M_BAD_JSON"),
        ({"algorithm": ALG, "auth_data": 5}, "M_BAD_JSON"),
        ({"algorithm": 5, "auth_data": {}}, "M_BAD_JSON"),
    ):
        _err(http.post("/room_keys/version", json=body), 400, errcode)
    _err(http.post("/room_keys/version", content=b"{"), 400, "M_NOT_JSON")
    _err(
        http.post("/room_keys/version", json={"algorithm": ALG, "auth_data": {"x": "a" * 70_000}}),
        413,
        "M_TOO_LARGE",
    )
    _err(http.get("/room_keys/version"), 404, "M_NOT_FOUND")
    version = _create(http)
    for path, body, errcode in (
        (
            f"/room_keys/version/{version}",
            {"algorithm": "other", "auth_data": {}},
            "M_INVALID_PARAM",
        ),
        (
            f"/room_keys/version/{version}",
            {"algorithm": ALG, "auth_data": {}, "version": "77"},
            "M_INVALID_PARAM",
        ),
        (f"/room_keys/version/{version}", {"algorithm": ALG}, "M_MISSING_PARAM"),
    ):
        _err(http.put(path, json=body), 400, errcode)
    _err(
        http.put("/room_keys/version/77", json={"algorithm": ALG, "auth_data": {}}),
        404,
        "M_NOT_FOUND",
    )
    _err(http.get("/room_keys/version/77"), 404, "M_NOT_FOUND")
    _err(http.get("/room_keys/version/abc"), 404, "M_NOT_FOUND")
    _err(http.delete("/room_keys/version/77"), 404, "M_NOT_FOUND")
    # Keys: missing version, bad bodies and IDs. Nothing is stored by any of these.
    _err(http.get("/room_keys/keys"), 400, "M_MISSING_PARAM")
    _err(http.put("/room_keys/keys", json={"rooms": {}}), 400, "M_MISSING_PARAM")
    _err(http.request("DELETE", "/room_keys/keys"), 400, "M_MISSING_PARAM")
    v = {"version": version}
    for r, status, errcode in (
        (http.put("/room_keys/keys", params=v, json={}), 400, "M_MISSING_PARAM"),
        (http.put("/room_keys/keys", params=v, json={"rooms": []}), 400, "M_BAD_JSON"),
        (
            http.put("/room_keys/keys", params=v, json={"rooms": {"bad": {"sessions": {}}}}),
            400,
            "M_INVALID_PARAM",
        ),
        (
            http.put(
                "/room_keys/keys",
                params=v,
                json={
                    "rooms": {
                        ROOM: {"sessions": {"ok": _key(), "bad": {**_key(), "is_verified": "yes"}}}
                    }
                },
            ),
            400,
            "M_BAD_JSON",
        ),
        (
            http.put(f"/room_keys/keys/{_q(ROOM)}", params=v, json={"sessions": "x"}),
            400,
            "M_BAD_JSON",
        ),
        (
            http.put(
                f"/room_keys/keys/{_q(ROOM)}/s",
                params=v,
                json={**_key(), "first_message_index": -1},
            ),
            400,
            "M_INVALID_PARAM",
        ),
        (
            http.put(
                f"/room_keys/keys/{_q(ROOM)}/s", params=v, json={**_key(), "forwarded_count": 1.5}
            ),
            400,
            "M_BAD_JSON",
        ),
        (
            http.put(
                f"/room_keys/keys/{_q(ROOM)}/s",
                params=v,
                json={**_key(), "session_data": {"x": "a" * 20_000}},
            ),
            413,
            "M_TOO_LARGE",
        ),
        (http.put("/room_keys/keys/notaroom/s", params=v, json=_key()), 400, "M_INVALID_PARAM"),
        (http.get("/room_keys/keys/notaroom", params=v), 400, "M_INVALID_PARAM"),
        (http.get(f"/room_keys/keys/!{'x' * 255}", params=v), 400, "M_INVALID_PARAM"),
        # A room ID without a server name is only a key here (SyTest 07-backup, Synapse).
        (http.get("/room_keys/keys/!notaroom/nosession", params=v), 404, "M_NOT_FOUND"),
    ):
        _err(r, status, errcode)
    info = _ok(http.get("/room_keys/version"))
    assert info["count"] == 0
    assert _ok(http.get("/room_keys/keys/!notaroom", params=v)) == {"sessions": {}}
    _ok(http.put("/room_keys/keys/!abcd/1234", params=v, json=_key()))
    assert _ok(http.get("/room_keys/keys/!abcd/1234", params=v)) == _key()
    _ok(http.delete("/room_keys/keys/!abcd/1234", params=v))
    with server.client() as anon:
        _err(anon.get(V3 + "/room_keys/version"), 401, "M_MISSING_TOKEN")
        _err(anon.get(V3 + "/room_keys/keys", params=v), 401, "M_MISSING_TOKEN")


def test_backups_are_per_user(server: RunningServer, http: httpx.Client, new_user: str) -> None:
    version = _create(http)
    _ok(http.put(f"/room_keys/keys/{_q(ROOM)}/s1", params={"version": version}, json=_key()))
    other = server.register(new_user + "other")
    with httpx.Client(
        base_url=server.base_url + V3, headers={"Authorization": f"Bearer {other['access_token']}"}
    ) as them:
        _err(them.get("/room_keys/version"), 404, "M_NOT_FOUND")
        _err(them.get("/room_keys/keys", params={"version": version}), 404, "M_NOT_FOUND")
        _err(them.delete(f"/room_keys/version/{version}"), 404, "M_NOT_FOUND")
    assert _ok(http.get("/room_keys/version"))["count"] == 1


def test_r0_prefix(server: RunningServer, http: httpx.Client) -> None:
    version = _create(http)
    token = http.headers["Authorization"]
    with httpx.Client(base_url=server.base_url, headers={"Authorization": token}) as c:
        r = c.get(f"/_matrix/client/r0/room_keys/version/{version}")
        assert r.status_code == 200, r.text
