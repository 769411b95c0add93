"""Third-party invites end to end: the real server, a fake identity server over HTTPS.

client-server-api "Third-party invites" (``/invite`` by address, ``invite_3pid``),
server-server-api ``/3pid/onbind``, ``/join`` with ``third_party_signed``; the identity
server's certificate is signed by a test CA given to the server as ``SSL_CERT_FILE``,
and 127.0.0.1 is let through ``ip_range_whitelist``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.fake_identity import (
    ACCESS_TOKEN,
    FakeIdentityServer,
    make_tls,
    post_onbind,
    serving,
    sign,
)
from tests.harness import RunningServer, make_config, running_server

V3 = "/_matrix/client/v3"
_n = itertools.count(1)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[RunningServer]:
    tls = make_tls(tls_dir, "trusted")
    config = make_config(tmp_path_factory.mktemp("server"), ip_range_whitelist=["127.0.0.1/32"])
    with running_server(config, env={"SSL_CERT_FILE": str(tls.ca_file)}) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


@pytest.fixture
def ids(tls_dir: Path) -> Iterator[FakeIdentityServer]:
    with serving(FakeIdentityServer(make_tls(tls_dir, "trusted"))) as fake:
        yield fake


def _user(server: RunningServer) -> tuple[str, dict[str, str]]:
    r = server.register(f"tpi{next(_n)}")
    return r["user_id"], {"Authorization": f"Bearer {r['access_token']}"}


def _email() -> str:
    return f"someone{next(_n)}@example.org"


def _3pid(ids: FakeIdentityServer, address: str) -> dict[str, str]:
    return {
        "id_server": ids.name,
        "id_access_token": ACCESS_TOKEN,
        "medium": "email",
        "address": address,
    }


def _room(server: RunningServer, auth: dict[str, str], **body: object) -> str:
    with server.client() as c:
        r = c.post(f"{V3}/createRoom", headers=auth, json={"preset": "private_chat", **body})
    assert r.status_code == 200, r.text
    return str(r.json()["room_id"])


def _state(server: RunningServer, auth: dict[str, str], room: str) -> list[dict]:
    with server.client() as c:
        r = c.get(f"{V3}/rooms/{room}/state", headers=auth)
    assert r.status_code == 200, r.text
    return list(r.json())


def _member(server: RunningServer, auth: dict[str, str], room: str, user: str) -> dict | None:
    for ev in _state(server, auth, room):
        if ev["type"] == "m.room.member" and ev["state_key"] == user:
            return ev
    return None


def _third_party_invites(server: RunningServer, auth: dict[str, str], room: str) -> list[dict]:
    return [e for e in _state(server, auth, room) if e["type"] == "m.room.third_party_invite"]


def _invite(server: RunningServer, auth: dict[str, str], room: str, body: dict):
    with server.client() as c:
        return c.post(f"{V3}/rooms/{room}/invite", headers=auth, json=body)


def _join(server: RunningServer, auth: dict[str, str], room: str, body: dict | None = None):
    with server.client() as c:
        return c.post(f"{V3}/rooms/{room}/join", headers=auth, json=body or {})


# --- a bound address: a plain invite ------------------------------------------------------


def test_bound_address_invites_the_user(server: RunningServer, ids: FakeIdentityServer) -> None:
    alice, a_auth = _user(server)
    bob, b_auth = _user(server)
    address = _email()
    ids.bind(address, bob)
    room = _room(server, a_auth)
    r = _invite(server, a_auth, room, _3pid(ids, address))
    assert r.status_code == 200, r.text
    member = _member(server, a_auth, room, bob)
    assert member is not None
    assert member["content"]["membership"] == "invite"
    assert member["sender"] == alice
    # The lookup: hash_details then a sha256 lookup, both with the client's token.
    assert ids.paths() == ["/_matrix/identity/v2/hash_details", "/_matrix/identity/v2/lookup"]
    assert {s.authorization for s in ids.seen} == {f"Bearer {ACCESS_TOKEN}"}
    lookup = ids.seen[1].body
    assert lookup["algorithm"] == "sha256"
    assert len(lookup["addresses"]) == 1
    assert address not in str(lookup)  # the address travels hashed
    assert not _third_party_invites(server, a_auth, room)
    assert _join(server, b_auth, room).status_code == 200


def test_create_room_with_invite_3pid(server: RunningServer, ids: FakeIdentityServer) -> None:
    _alice, a_auth = _user(server)
    bob, _ = _user(server)
    bound, unbound = _email(), _email()
    ids.bind(bound, bob)
    room = _room(server, a_auth, invite_3pid=[_3pid(ids, bound), _3pid(ids, unbound)])
    member = _member(server, a_auth, room, bob)
    assert member is not None
    assert member["content"]["membership"] == "invite"
    (tpi,) = _third_party_invites(server, a_auth, room)
    assert tpi["state_key"] == ids.token_for(room)


# --- an unbound address: m.room.third_party_invite, then the binding ----------------------


def test_unbound_address_then_onbind_invites_and_join(
    server: RunningServer, ids: FakeIdentityServer
) -> None:
    alice, a_auth = _user(server)
    bob, b_auth = _user(server)
    address = _email()
    room = _room(server, a_auth, name="Lemurs")
    r = _invite(server, a_auth, room, _3pid(ids, address))
    assert r.status_code == 200, r.text
    (tpi,) = _third_party_invites(server, a_auth, room)
    keys = ids.public_keys()
    assert tpi["sender"] == alice
    assert tpi["content"]["display_name"] == "l...@m..."
    assert [k["public_key"] for k in tpi["content"]["public_keys"]] == [
        keys["ed25519:0"],
        keys["ed25519:ephemeral"],
    ]
    store = next(s for s in ids.seen if s.path.endswith("/store-invite"))
    assert store.authorization == f"Bearer {ACCESS_TOKEN}"
    assert store.body["room_id"] == room
    assert store.body["sender"] == alice
    assert store.body["address"] == address
    assert store.body["room_name"] == "Lemurs"
    assert _member(server, a_auth, room, bob) is None

    r = post_onbind(server.base_url, ids.onbind_body(address, bob))
    assert r.status_code == 200, r.text
    member = _member(server, a_auth, room, bob)
    assert member is not None
    assert member["content"]["membership"] == "invite"
    assert member["sender"] == alice  # the original inviter
    tp = member["content"]["third_party_invite"]
    assert tp["display_name"] == "l...@m..."
    assert tp["signed"]["token"] == tpi["state_key"]
    assert tp["signed"]["mxid"] == bob
    with server.client() as c:
        sync = c.get(f"{V3}/sync", headers=b_auth).json()
    invite_state = sync["rooms"]["invite"][room]["invite_state"]["events"]
    assert alice in {e["state_key"] for e in invite_state if e["type"] == "m.room.member"}
    assert _join(server, b_auth, room).status_code == 200
    assert _member(server, a_auth, room, bob)["content"]["membership"] == "join"
    # The same notification again (an identity server retrying): nothing changes.
    assert post_onbind(server.base_url, ids.onbind_body(address, bob), "POST").status_code == 200
    assert _member(server, a_auth, room, bob)["content"]["membership"] == "join"


def test_accept_after_the_inviter_left(server: RunningServer, ids: FakeIdentityServer) -> None:
    _alice, a_auth = _user(server)
    carol, c_auth = _user(server)
    bob, b_auth = _user(server)
    address = _email()
    room = _room(server, a_auth, invite=[carol])
    assert _join(server, c_auth, room).status_code == 200
    assert _invite(server, a_auth, room, _3pid(ids, address)).status_code == 200
    with server.client() as c:
        assert c.post(f"{V3}/rooms/{room}/leave", headers=a_auth, json={}).status_code == 200
    assert post_onbind(server.base_url, ids.onbind_body(address, bob)).status_code == 200
    assert _join(server, b_auth, room).status_code == 200
    member = _member(server, c_auth, room, bob)
    assert member is not None
    assert member["content"]["membership"] == "join"


def test_join_with_third_party_signed(server: RunningServer, ids: FakeIdentityServer) -> None:
    alice, a_auth = _user(server)
    bob, b_auth = _user(server)
    room = _room(server, a_auth)
    assert _invite(server, a_auth, room, _3pid(ids, _email())).status_code == 200
    token = ids.token_for(room)
    signed = {"mxid": bob, "sender": alice, "token": token}
    sign(signed, ids.ephemeral, ids.name)  # the ephemeral key, as SyTest does
    r = _join(server, b_auth, room, {"third_party_signed": signed})
    assert r.status_code == 200, r.text
    assert _member(server, a_auth, room, bob)["content"]["membership"] == "join"
    assert any(s.path.endswith("/pubkey/isvalid") for s in ids.seen)  # the key was checked


# --- refused: nothing is written ------------------------------------------------------------


def _refused_exchange_leaves_nothing(
    server: RunningServer, a_auth: dict, b_auth: dict, room: str, bob: str
) -> None:
    assert _member(server, a_auth, room, bob) is None
    r = _join(server, b_auth, room)
    assert r.status_code == 403, r.text
    assert _member(server, a_auth, room, bob) is None


def test_wrong_but_valid_signature_is_refused(
    server: RunningServer, ids: FakeIdentityServer
) -> None:
    _alice, a_auth = _user(server)
    bob, b_auth = _user(server)
    address = _email()
    room = _room(server, a_auth)
    assert _invite(server, a_auth, room, _3pid(ids, address)).status_code == 200
    ids.rotate_keys()  # signed with keys the room's invite does not list
    r = post_onbind(server.base_url, ids.onbind_body(address, bob))
    assert r.status_code == 403, r.text
    assert r.json()["errcode"] == "M_FORBIDDEN"
    _refused_exchange_leaves_nothing(server, a_auth, b_auth, room, bob)


def test_revoked_key_is_refused(server: RunningServer, ids: FakeIdentityServer) -> None:
    _alice, a_auth = _user(server)
    bob, b_auth = _user(server)
    address = _email()
    room = _room(server, a_auth)
    assert _invite(server, a_auth, room, _3pid(ids, address)).status_code == 200
    body = ids.onbind_body(address, bob)  # signed with the listed key...
    ids.rotate_keys()  # ...which the identity server then revokes
    r = post_onbind(server.base_url, body)
    assert r.status_code == 403, r.text
    assert any(s.path.endswith("/pubkey/isvalid") for s in ids.seen)
    _refused_exchange_leaves_nothing(server, a_auth, b_auth, room, bob)


def test_unreachable_identity_server_is_refused(server: RunningServer, tls_dir: Path) -> None:
    _alice, a_auth = _user(server)
    bob, b_auth = _user(server)
    address = _email()
    room = _room(server, a_auth)
    with serving(FakeIdentityServer(make_tls(tls_dir, "trusted"))) as ids:
        assert _invite(server, a_auth, room, _3pid(ids, address)).status_code == 200
        body = ids.onbind_body(address, bob)
    r = post_onbind(server.base_url, body)  # the key cannot be checked any more
    assert r.status_code == 502, r.text
    _refused_exchange_leaves_nothing(server, a_auth, b_auth, room, bob)
    signed = body["invites"][0]["signed"]
    r = _join(server, b_auth, room, {"third_party_signed": signed})
    assert r.status_code == 502, r.text
    assert _member(server, a_auth, room, bob) is None


# --- the attacker's side --------------------------------------------------------------------


def test_user_without_invite_power_cannot_invite_by_address(
    server: RunningServer, ids: FakeIdentityServer
) -> None:
    alice, a_auth = _user(server)
    mallory, m_auth = _user(server)
    outsider, o_auth = _user(server)
    room = _room(server, a_auth, invite=[mallory], power_level_content_override={"invite": 50})
    assert _join(server, m_auth, room).status_code == 200
    for auth in (m_auth, o_auth):  # below the invite level; not in the room at all
        for address in (_email(), "bound@example.org"):
            ids.bind("bound@example.org", alice)
            r = _invite(server, auth, room, _3pid(ids, address))
            assert r.status_code == 403, r.text
            assert r.json()["errcode"] == "M_FORBIDDEN"
    assert ids.seen == []  # the identity server was never asked anything
    assert not _third_party_invites(server, a_auth, room)
    assert _member(server, a_auth, room, outsider) is None


def test_forged_onbind_and_signed_blocks_are_refused(
    server: RunningServer, ids: FakeIdentityServer
) -> None:
    import nacl.signing

    alice, a_auth = _user(server)
    bob, _ = _user(server)
    mallory, m_auth = _user(server)
    room = _room(server, a_auth)
    assert _invite(server, a_auth, room, _3pid(ids, _email())).status_code == 200
    token = ids.token_for(room)
    # Mallory signs with a key of her own and claims the invite.
    own = nacl.signing.SigningKey.generate()
    signed = {"mxid": mallory, "token": token}
    sign(signed, own, ids.name)
    invite = {"medium": "email", "address": "x@y", "room_id": room, "sender": alice}
    body = {
        "medium": "email",
        "address": "x@y",
        "mxid": mallory,
        "invites": [{**invite, "mxid": mallory, "signed": signed}],
    }
    assert post_onbind(server.base_url, body).status_code == 403
    assert _join(server, m_auth, room, {"third_party_signed": signed}).status_code == 403
    # A real signature for Bob does not let Mallory in.
    bobs = {"mxid": bob, "token": token}
    sign(bobs, ids.long_term, ids.name)
    r = _join(server, m_auth, room, {"third_party_signed": bobs})
    assert r.status_code == 403, r.text
    # An unknown token, and an onbind for another server's user.
    other = {"mxid": mallory, "token": "nosuchtoken"}
    sign(other, ids.long_term, ids.name)
    assert _join(server, m_auth, room, {"third_party_signed": other}).status_code == 403
    remote = {**invite, "mxid": "@m:elsewhere.example", "signed": signed}
    r = post_onbind(server.base_url, {**body, "invites": [remote]})
    assert r.status_code == 400, r.text
    nobody = "@nobody" + bob[bob.index(":") :]  # this server's, but no such account
    r = post_onbind(
        server.base_url, {**body, "invites": [{**invite, "mxid": nobody, "signed": signed}]}
    )
    assert r.status_code == 404, r.text
    for user in (mallory, bob, "@m:elsewhere.example", nobody):
        assert _member(server, a_auth, room, user) is None


def test_blocked_or_untrusted_identity_servers_are_refused(
    server: RunningServer, tls_dir: Path
) -> None:
    _alice, a_auth = _user(server)
    room = _room(server, a_auth)
    for id_server in ("10.255.255.1:8090", "0.0.0.0:8090"):  # the blacklist; never allowed
        body = {
            "id_server": id_server,
            "id_access_token": ACCESS_TOKEN,
            "medium": "email",
            "address": _email(),
        }
        r = _invite(server, a_auth, room, body)
        assert r.status_code == 400, r.text
        assert r.json()["errcode"] == "M_SERVER_NOT_TRUSTED"
    # A certificate from a CA the server does not trust: TLS refuses, nothing stored.
    with serving(FakeIdentityServer(make_tls(tls_dir, "untrusted"))) as rogue:
        r = _invite(server, a_auth, room, _3pid(rogue, _email()))
        assert r.status_code == 502, r.text
        assert rogue.seen == []
    assert not _third_party_invites(server, a_auth, room)


@pytest.mark.parametrize(
    ("change", "errcode"),
    [
        ({"id_access_token": None}, "M_MISSING_PARAM"),
        ({"id_server": None}, "M_MISSING_PARAM"),
        ({"address": 5}, "M_BAD_JSON"),
        ({"id_server": "evil.example/path"}, "M_INVALID_PARAM"),
        ({"id_server": "user@evil.example"}, "M_INVALID_PARAM"),
    ],
)
def test_bad_invite_bodies(
    server: RunningServer, ids: FakeIdentityServer, change: dict, errcode: str
) -> None:
    _alice, a_auth = _user(server)
    room = _room(server, a_auth)
    body = {**_3pid(ids, _email()), **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = _invite(server, a_auth, room, body)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == errcode
    with server.client() as c:
        r = c.post(f"{V3}/createRoom", headers=a_auth, json={"invite_3pid": [body]})
    assert r.status_code == 400
    assert r.json()["errcode"] == errcode
    assert ids.seen == []


def test_bad_onbind_bodies(server: RunningServer) -> None:
    for body in ({"invites": "x"}, {"invites": [5]}, {"invites": [{"room_id": "nope"}]}):
        r = post_onbind(server.base_url, body)
        assert r.status_code == 400, r.text
    assert post_onbind(server.base_url, {"mxid": "@a:b"}).status_code == 200  # nothing to do


def test_create_room_invite_3pid_must_be_a_list_of_objects(server: RunningServer) -> None:
    _alice, a_auth = _user(server)
    with server.client() as c:
        for value in ({}, "x", [5]):
            r = c.post(f"{V3}/createRoom", headers=a_auth, json={"invite_3pid": value})
            assert r.status_code == 400, r.text
            assert r.json()["errcode"] == "M_BAD_JSON"
        assert c.get(f"{V3}/joined_rooms", headers=a_auth).json()["joined_rooms"] == []


def test_lookups_can_be_turned_off(tmp_path: Path, tls_dir: Path, ids: FakeIdentityServer) -> None:
    config = make_config(tmp_path, ip_range_whitelist=["127.0.0.1/32"], enable_3pid_lookup=False)
    tls = make_tls(tls_dir, "trusted")
    with running_server(config, env={"SSL_CERT_FILE": str(tls.ca_file)}) as off:
        _alice, a_auth = _user(off)
        room = _room(off, a_auth)
        r = _invite(off, a_auth, room, _3pid(ids, _email()))
        assert r.status_code == 403, r.text
        assert r.json()["errcode"] == "M_FORBIDDEN"
        with off.client() as c:
            r = c.post(
                f"{V3}/createRoom", headers=a_auth, json={"invite_3pid": [_3pid(ids, _email())]}
            )
            assert r.status_code == 403, r.text
            assert c.get(f"{V3}/joined_rooms", headers=a_auth).json()["joined_rooms"] == [room]
        assert not _third_party_invites(off, a_auth, room)
    assert ids.seen == []
