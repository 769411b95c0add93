"""Our clients' /keys/query and /keys/claim for users of other servers: the cache, the
remote servers (through the client Protocol), timeouts and failures."""

from __future__ import annotations

from typing import Any

import nacl.signing
import pytest
import trio

from pocketserver.e2e.cross_signing import CrossSigning
from pocketserver.errors import MatrixError
from pocketserver.federation.e2e.requests import (
    USER_KEYS_CLAIM,
    USER_KEYS_QUERY,
    user_devices_path,
)
from pocketserver.storage import remote_devices
from tests.e2e_keys.keys import cross_signing_key, device_keys, public, sign, signed_otk

from .conftest import ALICE, EVE, EVIL, RBOB, RCAROL, REMOTE, Env, HttpError, until

THIRD = "third.test"
TED = f"@ted:{THIRD}"


def _keys_answer(env: Env, **users: Any) -> dict[str, Any]:
    return {"device_keys": users}


async def test_untracked_user_is_asked_of_their_server_then_tracked(env: Env) -> None:
    bob_d1 = device_keys(RBOB, "D1", env.remote_sk)
    msk = nacl.signing.SigningKey.generate()
    answer = {
        "device_keys": {
            RBOB: {"D1": {**bob_d1, "unsigned": {"device_display_name": "phone"}}},
            EVE: {"X": device_keys(EVE, "X", env.remote_sk)},  # not remote.test's user
        },
        "master_keys": {RBOB: cross_signing_key(RBOB, "master", msk, None)},
    }
    env.remotes.on("POST", REMOTE, USER_KEYS_QUERY, lambda _: answer)
    env.remotes.on(
        "GET", REMOTE, user_devices_path(RBOB), lambda _: env.remote_devices_answer(RBOB, 3, "D1")
    )
    # Named devices of a user whose list is not cached are asked with /user/keys/query
    # (as Synapse; a query for all of them resyncs first, see below).
    got = await env.keys.query(ALICE, {"device_keys": {RBOB: ["D1"]}, "timeout": 2500})
    assert got["failures"] == {}
    assert got["device_keys"][RBOB]["D1"]["unsigned"] == {"device_display_name": "phone"}  # type: ignore[index]
    assert EVE not in got["device_keys"]  # type: ignore[operator]
    assert got["master_keys"][RBOB]["keys"] == {f"ed25519:{public(msk)}": public(msk)}  # type: ignore[index]
    ((_, server, _, body, timeout_s),) = env.remotes.called("POST", USER_KEYS_QUERY)
    assert (server, body, timeout_s) == (REMOTE, {"device_keys": {RBOB: ["D1"]}}, 2.5)
    # Bob shares a room with Alice: his list is now tracked, and the next query is
    # answered from the cache without asking remote.test.
    await until(lambda: bool(env.db.read_sync(remote_devices.fresh_users, [RBOB])))
    again = await env.keys.query(ALICE, {"device_keys": {RBOB: ["D1"]}})
    assert set(again["device_keys"][RBOB]) == {"D1"}  # type: ignore[index]
    assert len(env.remotes.called("POST", USER_KEYS_QUERY)) == 1


async def test_whole_list_of_untracked_user_is_resynced_and_answered_from_cache(
    env: Env,
) -> None:
    """SyTest 40devicelists "resyncs when client query keys and there is no remote
    cache": the user's server may not serve /user/keys/query at all."""
    msk = nacl.signing.SigningKey.generate()
    master = cross_signing_key(RBOB, "master", msk, None)
    env.remotes.on(
        "GET",
        REMOTE,
        user_devices_path(RBOB),
        lambda _: env.remote_devices_answer(RBOB, 3, "D1", "D2", master_key=master),
    )
    before = env.stream.position()
    got = await env.keys.query(ALICE, {"device_keys": {RBOB: []}, "timeout": 2500})
    assert got["failures"] == {}
    assert set(got["device_keys"][RBOB]) == {"D1", "D2"}  # type: ignore[index]
    assert got["master_keys"][RBOB]["keys"] == master["keys"]  # type: ignore[index]
    assert not env.remotes.called("POST", "/")
    ((_, _, _, _, timeout_s),) = env.remotes.called("GET", "/")
    assert timeout_s == 2.5
    assert bool(env.db.read_sync(remote_devices.fresh_users, [RBOB]))
    assert RBOB in env.changed_for(ALICE, before)
    # A server that cannot resync is asked with /user/keys/query instead, and a
    # failure of both is reported.
    env.remotes.handlers.clear()
    env.remotes.calls.clear()
    env.db.write_sync(remote_devices.mark_stale, RBOB)
    got = await env.keys.query(ALICE, {"device_keys": {RBOB: []}, "timeout": 1000})
    assert list(got["failures"]) == [REMOTE]  # type: ignore[arg-type]
    assert [c[0] for c in env.remotes.calls] == ["GET", "POST"]


async def test_users_sharing_no_room_are_asked_every_time_and_not_tracked(env: Env) -> None:
    env.remotes.on(
        "POST",
        REMOTE,
        USER_KEYS_QUERY,
        lambda body: {"device_keys": {RCAROL: {"C1": device_keys(RCAROL, "C1", env.remote_sk)}}},
    )
    for _ in range(2):
        got = await env.keys.query(ALICE, {"device_keys": {RCAROL: ["C1"]}})
        assert set(got["device_keys"][RCAROL]) == {"C1"}  # type: ignore[index]
    assert len(env.remotes.called("POST", USER_KEYS_QUERY)) == 2
    assert env.rows("SELECT * FROM e2e_remote_users") == []
    assert not env.remotes.called("GET", "/")


async def test_a_server_cannot_answer_for_devices_or_users_not_asked(env: Env) -> None:
    env.remotes.on(
        "POST",
        REMOTE,
        USER_KEYS_QUERY,
        lambda _: {
            "device_keys": {
                RCAROL: {
                    "C1": device_keys(RCAROL, "C1", env.remote_sk),
                    "C2": device_keys(RCAROL, "C2", env.remote_sk),  # not asked for
                    "C3": device_keys(RCAROL, "WRONG", env.remote_sk),  # mislabelled
                },
                ALICE: {"A9": device_keys(ALICE, "A9", env.remote_sk)},  # ours!
            },
            "master_keys": {ALICE: {"user_id": ALICE, "usage": ["master"], "keys": {}}},
        },
    )
    got = await env.keys.query(ALICE, {"device_keys": {RCAROL: ["C1", "C3"]}})
    assert set(got["device_keys"]) == {RCAROL}  # type: ignore[arg-type]
    assert set(got["device_keys"][RCAROL]) == {"C1"}  # type: ignore[index]
    assert got["master_keys"] == {}


async def test_unreachable_and_erroring_servers_are_failures(env: Env) -> None:
    env.remotes.on("POST", EVIL, USER_KEYS_QUERY, lambda _: HttpError(403, "go away"))
    got = await env.keys.query(
        ALICE, {"device_keys": {RCAROL: [], EVE: [], TED: []}, "timeout": 1000}
    )
    assert set(got["failures"]) == {REMOTE, EVIL, THIRD}  # type: ignore[arg-type]
    assert got["failures"][EVIL]["status"] == 403  # type: ignore[index]
    assert got["failures"][REMOTE]["status"] == 503  # type: ignore[index]


async def test_a_server_that_never_answers_fails_after_the_timeout(env: Env) -> None:
    env.remotes.hang.add(THIRD)
    env.remotes.on(
        "POST",
        REMOTE,
        USER_KEYS_QUERY,
        lambda _: {"device_keys": {RCAROL: {"C1": device_keys(RCAROL, "C1", env.remote_sk)}}},
    )
    started = trio.current_time()
    got = await env.keys.query(ALICE, {"device_keys": {TED: [], RCAROL: []}, "timeout": 300})
    elapsed = trio.current_time() - started
    assert 0.3 <= elapsed < 2
    assert list(got["failures"]) == [THIRD]  # type: ignore[arg-type]
    assert set(got["device_keys"][RCAROL]) == {"C1"}  # type: ignore[index]


async def test_own_signature_on_a_remote_master_key_is_shown(env: Env) -> None:
    """Alice signed Bob's master key with her user-signing key: she sees it."""
    sks = {n: nacl.signing.SigningKey.generate() for n in ("amsk", "ausk", "bmsk")}
    bob_master = cross_signing_key(RBOB, "master", sks["bmsk"], None)
    env.remotes.on(
        "GET",
        REMOTE,
        user_devices_path(RBOB),
        lambda _: env.remote_devices_answer(RBOB, 1, "D1", master_key=bob_master),
    )
    await env.fed.lists.track([RBOB])
    await until(lambda: bool(env.db.read_sync(remote_devices.fresh_users, [RBOB])))
    cs = CrossSigning(env.db, env.stream)
    await cs.upload_keys(
        ALICE,
        {
            "master_key": cross_signing_key(ALICE, "master", sks["amsk"], None),
            "user_signing_key": cross_signing_key(ALICE, "user_signing", sks["ausk"], sks["amsk"]),
        },
    )
    signed = sign(bob_master, ALICE, f"ed25519:{public(sks['ausk'])}", sks["ausk"])
    failures = await cs.upload_signatures(ALICE, {RBOB: {public(sks["bmsk"]): signed}})
    assert failures == {}
    got = await env.keys.query(ALICE, {"device_keys": {RBOB: []}})
    assert ALICE in got["master_keys"][RBOB]["signatures"]  # type: ignore[index]


async def test_claims_go_to_each_server_at_once_and_keep_what_was_asked(env: Env) -> None:
    otk = signed_otk(RCAROL, "C1", env.remote_sk, 1)
    env.remotes.on(
        "POST",
        REMOTE,
        USER_KEYS_CLAIM,
        lambda body: {
            "one_time_keys": {
                RCAROL: {"C1": {"signed_curve25519:AAA": otk}, "C2": {"signed_curve25519:B": otk}},
                ALICE: {"A1": {"signed_curve25519:Z": otk}},
            }
        },
    )
    env.remotes.hang.add(THIRD)
    started = trio.current_time()
    got = await env.keys.claim(
        {
            "one_time_keys": {
                RCAROL: {"C1": "signed_curve25519"},
                TED: {"T1": "signed_curve25519"},
                EVE: {"E1": "signed_curve25519"},
            },
            "timeout": 200,
        }
    )
    assert trio.current_time() - started < 2
    assert got["one_time_keys"] == {RCAROL: {"C1": {"signed_curve25519:AAA": otk}}}
    assert set(got["failures"]) == {THIRD, EVIL}  # type: ignore[arg-type]
    asked = {c[1]: (c[3], c[4]) for c in env.remotes.called("POST", USER_KEYS_CLAIM)}
    assert asked[REMOTE] == ({"one_time_keys": {RCAROL: {"C1": "signed_curve25519"}}}, 0.2)
    assert asked[THIRD] == ({"one_time_keys": {TED: {"T1": "signed_curve25519"}}}, 0.2)


@pytest.mark.parametrize("bad", [-1, "10", True])
async def test_bad_timeouts_are_refused(env: Env, bad: object) -> None:
    with pytest.raises(MatrixError) as e:
        await env.keys.query(ALICE, {"device_keys": {RCAROL: []}, "timeout": bad})
    assert (e.value.status, e.value.errcode) == (400, "M_INVALID_PARAM")
    with pytest.raises(MatrixError):
        await env.keys.claim({"one_time_keys": {RCAROL: {"C": "a"}}, "timeout": bad})
    assert env.remotes.calls == []


async def test_a_servers_answer_is_kept_as_given_when_it_names_the_right_device(
    env: Env,
) -> None:
    """As the cache (and Synapse): a key object is passed on as its user's server gives
    it, unless it names another user or device."""
    env.remotes.on(
        "POST",
        REMOTE,
        USER_KEYS_QUERY,
        lambda _: {
            "device_keys": {
                RCAROL: {
                    "C1": {"device_keys": {}},
                    "C2": {"user_id": RCAROL, "device_id": "C2", "keys": {}},
                    "C3": {"user_id": RBOB, "device_id": "C3"},
                }
            }
        },
    )
    got = await env.keys.query(ALICE, {"device_keys": {RCAROL: ["C1", "C2", "C3"]}})
    assert got["device_keys"][RCAROL] == {  # type: ignore[index]
        "C1": {"device_keys": {}, "unsigned": {}},
        "C2": {"user_id": RCAROL, "device_id": "C2", "keys": {}, "unsigned": {}},
    }
