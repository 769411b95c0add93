"""OpenID tokens in process: expiry, the per-user bound, where userinfo is served."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pocketserver.accounts.tokens import hash_token
from pocketserver.app import create_app
from pocketserver.config import load_config
from pocketserver.services import build_services
from pocketserver.storage import openid
from pocketserver.storage.migrations import apply_migrations
from tests.harness import make_config

USERINFO = "/_matrix/federation/v1/openid/userinfo"


def _conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    apply_migrations(conn)
    return conn


def test_tokens_expire_and_expired_ones_are_dropped() -> None:
    conn = _conn()
    openid.insert(conn, hash_token("a"), "@a:hs", 1000, 2000, 50)
    assert openid.user_for(conn, hash_token("a"), 1999) == "@a:hs"
    assert openid.user_for(conn, hash_token("a"), 2000) is None
    assert openid.user_for(conn, hash_token("b"), 1500) is None
    openid.insert(conn, hash_token("b"), "@b:hs", 2500, 3500, 50)
    assert conn.execute("SELECT count(*) FROM openid_tokens").fetchone()[0] == 1


def test_live_tokens_per_user_are_bounded() -> None:
    conn = _conn()
    for i in range(5):
        openid.insert(conn, hash_token(f"t{i}"), "@a:hs", 1000 + i, 10_000, 3)
    openid.insert(conn, hash_token("other"), "@b:hs", 1000, 10_000, 3)
    live = [i for i in range(5) if openid.user_for(conn, hash_token(f"t{i}"), 2000)]
    assert live == [2, 3, 4]  # the oldest went
    assert openid.user_for(conn, hash_token("other"), 2000) == "@b:hs"


async def test_userinfo_is_served_with_the_federation_or_openid_resource(tmp_path: Path) -> None:
    services = await build_services(load_config(make_config(tmp_path)))
    try:
        for resources, served in (
            (["client"], False),
            (["federation"], True),
            (["openid"], True),
            (["client", "openid"], True),
        ):
            client = create_app(services, resources).test_client()
            r = await client.get(USERINFO, query_string={"access_token": "x"})
            assert r.status_code == (401 if served else 404), resources
            if served:
                assert (await r.get_json())["errcode"] == "M_UNKNOWN_TOKEN"
        # The openid resource alone serves nothing else.
        client = create_app(services, ["openid"]).test_client()
        assert (await client.get("/_matrix/client/versions")).status_code == 404
        assert (await client.get("/_matrix/key/v2/server")).status_code == 404
    finally:
        services.db.close()
