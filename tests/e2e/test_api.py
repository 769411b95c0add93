"""Every foundation endpoint and its error cases, over HTTP against the real server."""

from __future__ import annotations

import nacl.encoding
import nacl.signing
import pytest
from canonicaljson import encode_canonical_json

from tests.harness import RunningServer, make_config, registration_mac_for_tests, running_server

# --- discovery ------------------------------------------------------------------------


def test_versions(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get("/_matrix/client/versions")
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["versions"], list)
    assert all(isinstance(v, str) for v in body["versions"])
    # Element needs one of v1.1-v1.13, mautrix bridges v1.4 or later; v1.11 needs
    # authenticated media, which the media repository provides.
    assert {"v1.1", "v1.4", "v1.10", "v1.11"} <= set(body["versions"])
    assert isinstance(body["unstable_features"], dict)
    assert r.headers["access-control-allow-origin"] == "*"


def test_well_known_client(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get("/.well-known/matrix/client")
    assert r.status_code == 200
    assert r.json() == {"m.homeserver": {"base_url": f"https://{server.server_name}/"}}


def test_well_known_server_on_in_the_generated_config(server: RunningServer) -> None:
    """--generate-config turns serve_server_wellknown on (federation through the
    reverse proxy on 443); the loader's default stays false, as Synapse's."""
    with server.client() as c:
        r = c.get("/.well-known/matrix/server")
    assert r.status_code == 200
    assert r.json() == {"m.server": f"{server.server_name}:443"}


def test_well_known_server_off_when_disabled(tmp_path) -> None:
    config = make_config(tmp_path, serve_server_wellknown=False)
    with running_server(config) as s, s.client() as c:
        r = c.get("/.well-known/matrix/server")
    assert r.status_code == 404
    assert r.json()["errcode"] == "M_NOT_FOUND"


def test_well_known_server_when_enabled(tmp_path) -> None:
    config = make_config(
        tmp_path, serve_server_wellknown=True, public_baseurl="https://matrix.example.org/"
    )
    with running_server(config) as s, s.client() as c:
        r = c.get("/.well-known/matrix/server")
    assert r.status_code == 200
    assert r.json() == {"m.server": "matrix.example.org:443"}


def test_federation_version(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get("/_matrix/federation/v1/version")
    assert r.status_code == 200
    assert r.json()["server"]["name"] == "pocketserver"
    assert isinstance(r.json()["server"]["version"], str)


@pytest.mark.parametrize("path", ["/_matrix/key/v2/server", "/_matrix/key/v2/server/ed25519:x"])
def test_server_keys_verify_independently(server: RunningServer, path: str) -> None:
    """The key response is signed by the key it publishes (checked with plain pynacl)."""
    import time

    with server.client() as c:
        body = c.get(path).json()
    assert body["server_name"] == server.server_name
    assert body["valid_until_ts"] > time.time() * 1000
    (key_id, key), *_ = body["verify_keys"].items()
    assert key_id.startswith("ed25519:")
    verify_key = nacl.signing.VerifyKey(_unpadded_b64decode(key["key"]))
    signature = _unpadded_b64decode(body["signatures"][server.server_name][key_id])
    unsigned = {k: v for k, v in body.items() if k not in ("signatures", "unsigned")}
    verify_key.verify(encode_canonical_json(unsigned), signature)
    # The key on disk is the one published.
    key_file = server.config_path.parent / f"{server.server_name}.signing.key"
    alg, version, seed = key_file.read_text().split()
    assert f"{alg}:{version}" == key_id
    derived = nacl.signing.SigningKey(_unpadded_b64decode(seed)).verify_key
    assert derived.encode() == verify_key.encode()
    unsigned["valid_until_ts"] += 1
    tampered = encode_canonical_json(unsigned)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        verify_key.verify(tampered, signature)


def _unpadded_b64decode(s: str) -> bytes:
    import base64

    return base64.b64decode(s + "=" * (-len(s) % 4))


# --- generic errors ---------------------------------------------------------------------


def test_unknown_endpoint(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get("/_matrix/client/v3/no_such_thing")
    assert r.status_code == 404
    assert r.json()["errcode"] == "M_UNRECOGNIZED"


def test_wrong_method(server: RunningServer) -> None:
    with server.client() as c:
        r = c.delete("/_matrix/client/v3/login")
    assert r.status_code == 405
    assert r.json()["errcode"] == "M_UNRECOGNIZED"


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"{not json", "M_NOT_JSON"),
        (b"", "M_NOT_JSON"),
        (b"\xff\xfe", "M_NOT_JSON"),
        (b'{"a": NaN}', "M_NOT_JSON"),
        (b"[1, 2]", "M_BAD_JSON"),
        (b'"a string"', "M_BAD_JSON"),
        (b'{"type": 5}', "M_BAD_JSON"),
        (b"{}", "M_MISSING_PARAM"),
    ],
)
def test_bad_bodies(server: RunningServer, body: bytes, errcode: str) -> None:
    with server.client() as c:
        r = c.post("/_matrix/client/v3/login", content=body)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == errcode


def test_body_too_large(server: RunningServer) -> None:
    with server.client() as c:
        r = c.post("/_matrix/client/v3/login", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert r.status_code == 413
    assert r.json()["errcode"] == "M_TOO_LARGE"


def test_cors_preflight(server: RunningServer) -> None:
    with server.client() as c:
        r = c.options(
            "/_matrix/client/v3/login",
            headers={
                "Origin": "https://app.element.io",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed


# --- shared-secret registration ------------------------------------------------------


def _register_body(server: RunningServer, c, user: str, password: str = "pw", admin: bool = False):
    nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
    return {
        "nonce": nonce,
        "username": user,
        "password": password,
        "admin": admin,
        "mac": registration_mac_for_tests(server.shared_secret, nonce, user, password, admin),
    }


def test_register_and_use_token(server: RunningServer, new_user: str) -> None:
    answer = server.register(new_user, admin=True)
    assert answer["user_id"] == f"@{new_user}:{server.server_name}"
    with server.client() as c:
        r = c.get(
            "/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {answer['access_token']}"},
        )
    assert r.json() == {
        "user_id": answer["user_id"],
        "device_id": answer["device_id"],
        "is_guest": False,
    }


def test_register_nonce_is_single_use(server: RunningServer, new_user: str) -> None:
    with server.client() as c:
        body = _register_body(server, c, new_user)
        assert c.post("/_synapse/admin/v1/register", json=body).status_code == 200
        body["username"] = new_user + "x"
        body["mac"] = registration_mac_for_tests(
            server.shared_secret, body["nonce"], new_user + "x", "pw", False
        )
        r = c.post("/_synapse/admin/v1/register", json=body)
    assert r.status_code == 400
    assert r.json()["errcode"] == "M_UNKNOWN"


def test_register_bad_mac_creates_nothing(server: RunningServer, new_user: str) -> None:
    with server.client() as c:
        body = _register_body(server, c, new_user)
        body["mac"] = "0" * 40
        r = c.post("/_synapse/admin/v1/register", json=body)
        assert r.status_code == 403
        assert r.json()["errcode"] == "M_FORBIDDEN"
        # admin flag is covered by the MAC: flipping it must fail too
        body = _register_body(server, c, new_user)
        body["admin"] = True
        assert c.post("/_synapse/admin/v1/register", json=body).status_code == 403
    assert server.login(new_user, "pw").status_code == 403
    # The name is still free.
    server.register(new_user, "pw")


def test_register_user_in_use(server: RunningServer, new_user: str) -> None:
    server.register(new_user)
    with server.client() as c:
        r = c.post("/_synapse/admin/v1/register", json=_register_body(server, c, new_user.upper()))
    assert r.status_code == 400
    assert r.json()["errcode"] in ("M_USER_IN_USE", "M_INVALID_USERNAME")
    with server.client() as c:
        r = c.post("/_synapse/admin/v1/register", json=_register_body(server, c, new_user))
    assert r.status_code == 400
    assert r.json()["errcode"] == "M_USER_IN_USE"


@pytest.mark.parametrize("bad", ["has space", "UPPER", "ümlaut", "a:b", ""])
def test_register_invalid_username(server: RunningServer, bad: str) -> None:
    with server.client() as c:
        r = c.post("/_synapse/admin/v1/register", json=_register_body(server, c, bad))
    assert r.status_code == 400
    assert r.json()["errcode"] in ("M_INVALID_USERNAME", "M_MISSING_PARAM", "M_INVALID_PARAM")


@pytest.mark.parametrize(
    ("patch", "errcode"),
    [
        ({"nonce": None}, "M_MISSING_PARAM"),
        ({"mac": None}, "M_MISSING_PARAM"),
        ({"password": 5}, "M_BAD_JSON"),
        ({"admin": "yes"}, "M_BAD_JSON"),
        ({"user_type": "wizard"}, "M_INVALID_PARAM"),
        ({"nonce": "not-a-nonce-we-issued"}, "M_UNKNOWN"),
    ],
)
def test_register_bad_fields(server: RunningServer, new_user: str, patch, errcode: str) -> None:
    with server.client() as c:
        body = _register_body(server, c, new_user)
        for k, v in patch.items():
            if v is None:
                del body[k]
            else:
                body[k] = v
        r = c.post("/_synapse/admin/v1/register", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == errcode


def test_register_disabled_without_secret(tmp_path) -> None:
    config = make_config(tmp_path, registration_shared_secret=None)
    with running_server(config) as s, s.client() as c:
        r = c.get("/_synapse/admin/v1/register")
    assert r.status_code == 400
    assert r.json()["errcode"] == "M_UNKNOWN"


# --- login, whoami, logout -----------------------------------------------------------


def test_login_flows(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get("/_matrix/client/v3/login")
    assert r.status_code == 200
    assert {"type": "m.login.password"} in r.json()["flows"]


@pytest.mark.parametrize("form", ["localpart", "mxid", "deprecated_user"])
def test_login_forms(server: RunningServer, new_user: str, form: str) -> None:
    server.register(new_user)
    mxid = f"@{new_user}:{server.server_name}"
    body: dict[str, object] = {"type": "m.login.password", "password": "correct horse"}
    if form == "localpart":
        body["identifier"] = {"type": "m.id.user", "user": new_user}
    elif form == "mxid":
        body["identifier"] = {"type": "m.id.user", "user": mxid}
    else:
        body["user"] = new_user
    with server.client() as c:
        r = c.post("/_matrix/client/v3/login", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["user_id"] == mxid
        assert answer["access_token"]
        assert answer["device_id"]
        who = c.get(
            "/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {answer['access_token']}"},
        )
    assert who.json()["user_id"] == mxid
    assert who.json()["device_id"] == answer["device_id"]


def test_login_with_device_id_replaces_old_token(server: RunningServer, new_user: str) -> None:
    server.register(new_user)
    first = server.login(new_user, device_id="MYPHONE", initial_device_display_name="Phone").json()
    second = server.login(new_user, device_id="MYPHONE").json()
    assert first["device_id"] == second["device_id"] == "MYPHONE"
    with server.client() as c:
        old = c.get(
            "/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {first['access_token']}"},
        )
        new = c.get(
            "/_matrix/client/v3/account/whoami",
            headers={"Authorization": f"Bearer {second['access_token']}"},
        )
    assert old.status_code == 401
    assert old.json()["errcode"] == "M_UNKNOWN_TOKEN"
    assert new.status_code == 200


def test_login_wrong_password_and_unknown_user(server: RunningServer, new_user: str) -> None:
    server.register(new_user)
    for user, password in [
        (new_user, "wrong"),
        ("nobody-here", "correct horse"),
        ("@x:other.org", "pw"),
    ]:
        r = server.login(user, password)
        assert r.status_code == 403, r.text
        assert r.json()["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        ({"type": "m.login.sso"}, 400, "M_UNKNOWN"),
        ({"type": "m.login.password", "password": "x"}, 400, "M_MISSING_PARAM"),
        ({"type": "m.login.password", "identifier": "alice", "password": "x"}, 400, "M_BAD_JSON"),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.thirdparty"},
                "password": "x",
            },
            400,
            "M_UNKNOWN",
        ),
        (
            {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "a"}},
            400,
            "M_MISSING_PARAM",
        ),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "a"},
                "password": 1,
            },
            400,
            "M_BAD_JSON",
        ),
    ],
)
def test_login_bad_requests(server: RunningServer, body, status: int, errcode: str) -> None:
    with server.client() as c:
        r = c.post("/_matrix/client/v3/login", json=body)
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode


def test_login_rate_limited(tmp_path) -> None:
    config = make_config(
        tmp_path,
        rc_login={"address": {"per_second": 0.01, "burst_count": 2}},
    )
    with running_server(config) as s:
        codes = [s.login("nobody", "x").status_code for _ in range(3)]
        r = s.login("nobody", "x")
    assert codes[:2] == [403, 403]
    assert r.status_code == 429
    assert r.json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert r.json()["retry_after_ms"] > 0


def test_missing_and_unknown_token(server: RunningServer) -> None:
    with server.client() as c:
        r = c.get("/_matrix/client/v3/account/whoami")
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_MISSING_TOKEN"
        r = c.get("/_matrix/client/v3/account/whoami", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_UNKNOWN_TOKEN"
        r = c.get("/_matrix/client/v3/account/whoami", headers={"Authorization": "Basic abc"})
        assert r.status_code == 401
        assert r.json()["errcode"] == "M_MISSING_TOKEN"


def test_logout(server: RunningServer, new_user: str) -> None:
    server.register(new_user)
    a = server.login(new_user).json()["access_token"]
    b = server.login(new_user).json()["access_token"]
    with server.client() as c:
        assert (
            c.post("/_matrix/client/v3/logout", headers={"Authorization": f"Bearer {a}"}).json()
            == {}
        )
        r = c.get("/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {a}"})
        assert r.status_code == 401
        r = c.get("/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {b}"})
        assert r.status_code == 200
        r = c.post("/_matrix/client/v3/logout", headers={"Authorization": f"Bearer {a}"})
        assert r.status_code == 401


def test_logout_all(server: RunningServer, new_user: str) -> None:
    server.register(new_user)
    tokens = [server.login(new_user).json()["access_token"] for _ in range(3)]
    with server.client() as c:
        r = c.post(
            "/_matrix/client/v3/logout/all", headers={"Authorization": f"Bearer {tokens[0]}"}
        )
        assert r.status_code == 200
        for t in tokens:
            r = c.get("/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {t}"})
            assert r.status_code == 401
    # A new login still works.
    assert server.login(new_user).status_code == 200


def test_r0_prefix_still_served(server: RunningServer) -> None:
    with server.client() as c:
        assert c.get("/_matrix/client/r0/login").status_code == 200


def test_tokens_never_logged(server: RunningServer, new_user: str) -> None:
    token = server.register(new_user)["access_token"]
    with server.client() as c:
        c.get("/_matrix/client/v3/account/whoami", headers={"Authorization": f"Bearer {token}"})
        c.get("/_matrix/client/v3/account/whoami", params={"access_token": token})
    log = server.log_text()
    assert token not in log
    assert "correct horse" not in log
    assert "GET /_matrix/client/v3/account/whoami 200" in log


def test_early_errors_do_not_stall_the_connection(server: RunningServer, new_user: str) -> None:
    """A route that answers before reading the body (a bad alias here, a missing token)
    must not leave the body in the connection: the next request on the same keep-alive
    connection must be answered at once."""
    token = server.register(new_user)["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    big = b'{"reason": "' + b"x" * 200_000 + b'"}'
    with server.client() as c:
        for i in range(30):
            r = c.post(
                "/_matrix/client/v3/join/%23not-an-alias", headers=auth, json={"reason": "x"}
            )
            assert r.status_code == 400
            assert c.get("/_matrix/client/versions", timeout=5).status_code == 200
            r = c.put(
                f"/_matrix/client/v3/rooms/!r:test.local/send/m.room.message/{i}", content=big
            )
            assert r.status_code == 401
            assert c.get("/_matrix/client/versions", timeout=5).status_code == 200
