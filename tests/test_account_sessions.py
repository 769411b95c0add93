"""In-process tests of UIA sessions, registration tokens, refresh tokens and device activity."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import trio

from pocketserver.accounts.devices import DeviceActivity, DeviceManager
from pocketserver.accounts.refresh import RefreshTokens
from pocketserver.accounts.registration_tokens import RegistrationTokens
from pocketserver.accounts.service import AccountService
from pocketserver.accounts.uia import (
    DUMMY,
    PASSWORD,
    AuthRequired,
    StageFailed,
    UiaSession,
    UserInteractiveAuth,
)
from pocketserver.cache import MemoryBudget
from pocketserver.errors import MatrixError
from pocketserver.storage.db import Database
from tests.test_accounts import make_config

# --- UIA ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _ok(session: UiaSession, auth: Mapping[str, object]) -> None:
    if auth.get("password") != "right":
        raise StageFailed("M_FORBIDDEN", "wrong password")


async def _start(uia: UserInteractiveAuth, op: str = "op", **kw: object) -> str:
    with pytest.raises(AuthRequired) as e:
        await uia.authenticate(op, {}, [[PASSWORD]], {PASSWORD: _ok}, **kw)  # type: ignore[arg-type]
    body = e.value.to_json()
    assert e.value.status == 401
    assert "errcode" not in body
    assert "completed" not in body
    return str(body["session"])


async def test_uia_two_stage_flow_in_order() -> None:
    uia = UserInteractiveAuth(clock=Clock())
    flows = [[DUMMY, PASSWORD]]
    checks = {PASSWORD: _ok}
    with pytest.raises(AuthRequired) as e:
        await uia.authenticate("op", {}, flows, checks)
    sid = e.value.to_json()["session"]
    # Out of order: 401 with errcode, nothing completed.
    with pytest.raises(AuthRequired) as e:
        await uia.authenticate(
            "op", {"auth": {"type": PASSWORD, "session": sid, "password": "right"}}, flows, checks
        )
    assert e.value.to_json()["errcode"] == "M_FORBIDDEN"
    assert e.value.to_json()["completed"] == []
    with pytest.raises(AuthRequired) as e:
        await uia.authenticate("op", {"auth": {"type": DUMMY, "session": sid}}, flows, checks)
    body = e.value.to_json()
    assert body["completed"] == [DUMMY]
    assert "errcode" not in body
    # Retrying a completed stage answers the same 401.
    with pytest.raises(AuthRequired) as e:
        await uia.authenticate("op", {"auth": {"type": DUMMY, "session": sid}}, flows, checks)
    assert e.value.to_json()["completed"] == [DUMMY]
    with pytest.raises(AuthRequired) as e:
        await uia.authenticate(
            "op", {"auth": {"type": PASSWORD, "session": sid, "password": "no"}}, flows, checks
        )
    assert e.value.to_json()["errcode"] == "M_FORBIDDEN"
    assert e.value.to_json()["completed"] == [DUMMY]
    session = await uia.authenticate(
        "op", {"auth": {"type": PASSWORD, "session": sid, "password": "right"}}, flows, checks
    )
    assert session.completed == [DUMMY, PASSWORD]
    uia.finish(session)
    assert len(uia) == 0


async def test_uia_sessions_expire_and_are_bounded() -> None:
    clock = Clock()
    uia = UserInteractiveAuth(max_sessions=3, ttl_s=60, clock=clock)
    sids = [await _start(uia) for _ in range(5)]
    assert len(uia) == 3
    with pytest.raises(MatrixError) as e:
        await uia.authenticate("op", {"auth": {"session": sids[0]}}, [[PASSWORD]], {})
    assert (e.value.status, e.value.errcode) == (400, "M_UNKNOWN")
    clock.now += 61
    with pytest.raises(MatrixError) as e:
        await uia.authenticate("op", {"auth": {"session": sids[4]}}, [[PASSWORD]], {})
    assert e.value.errcode == "M_UNKNOWN"
    assert uia.live_sessions() == []


async def test_uia_session_is_bound_to_operation_and_user() -> None:
    uia = UserInteractiveAuth(clock=Clock())
    sid = await _start(uia, "password", user_id="@a:x")
    for op, user in (("deactivate", "@a:x"), ("password", "@b:x")):
        with pytest.raises(MatrixError) as e:
            await uia.authenticate(
                op, {"auth": {"type": PASSWORD, "session": sid}}, [[PASSWORD]], {}, user_id=user
            )
        assert (e.value.status, e.value.errcode) == (403, "M_FORBIDDEN")


async def test_uia_remembers_request_fields() -> None:
    uia = UserInteractiveAuth(clock=Clock())
    with pytest.raises(AuthRequired) as e:
        await uia.authenticate("op", {}, [[DUMMY]], {}, remember={"username": "a"})
    sid = e.value.to_json()["session"]
    session = await uia.authenticate(
        "op", {"auth": {"type": DUMMY, "session": sid}}, [[DUMMY]], {}, remember={"password": "p"}
    )
    assert session.request == {"username": "a", "password": "p"}


# --- storage-backed services -----------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "home.db", memory_bytes=4 * 1024 * 1024)
    yield database
    database.close()


@pytest.fixture
def accounts(tmp_path: Path, db: Database) -> AccountService:
    config = make_config(tmp_path)
    return AccountService(db, config, MemoryBudget(config.memory_budget))


async def test_registration_token_pending_and_completed(db: Database) -> None:
    uia = UserInteractiveAuth(clock=Clock())
    regs = RegistrationTokens(db, uia)
    await regs.create({"token": "t", "uses_allowed": 2})
    sessions = []
    for _ in range(2):
        with pytest.raises(AuthRequired) as e:
            await uia.authenticate("register", {}, [["x"]], {})
        sid = e.value.to_json()["session"]
        s = uia.live_sessions()[-1]
        assert s.session_id == sid
        await regs.check_stage(s, {"token": "t"})
        sessions.append(s)
    assert (await regs.get("t"))["pending"] == 2
    assert not await regs.is_valid("t")
    with pytest.raises(StageFailed):
        await regs.check_stage(UiaSession("other", "register", None, 1e9), {"token": "t"})
    # The same session may repeat its own stage without counting twice.
    await regs.check_stage(sessions[0], {"token": "t"})
    await regs.count_use(sessions[0])
    got = await regs.get("t")
    assert (got["pending"], got["completed"]) == (1, 1)
    uia.finish(sessions[1])  # abandoned: the pending use is released
    assert await regs.is_valid("t")
    with pytest.raises(MatrixError) as e:
        await regs.check_stage(sessions[1], {})
    assert e.value.errcode == "M_MISSING_PARAM"


async def test_refresh_rotation_and_expiry(db: Database, accounts: AccountService) -> None:
    await accounts.register("alice", "pw")
    session = await accounts.create_session("@alice:example.org", "DEV", None)
    refresh = RefreshTokens(db, accounts, access_lifetime_ms=50, refresh_lifetime_ms=None)
    rt, expires = await refresh.make_refreshable(session.access_token)
    assert expires == 50
    assert (await accounts.authenticate(session.access_token)).device_id == "DEV"
    lost = await refresh.refresh(rt)
    with pytest.raises(MatrixError) as e:
        await accounts.authenticate(session.access_token)
    assert e.value.errcode == "M_UNKNOWN_TOKEN"
    # The answer was lost: the client repeats the refresh with the same token, and the
    # unused pair of the first try stops working.
    new = await refresh.refresh(rt)
    with pytest.raises(MatrixError):
        await accounts.authenticate(lost.access_token)
    with pytest.raises(MatrixError):
        await refresh.refresh(lost.refresh_token)
    # First use of the new access token retires the old refresh token.
    assert (await accounts.authenticate(new.access_token)).device_id == "DEV"
    with pytest.raises(MatrixError) as e:
        await refresh.refresh(rt)
    assert e.value.to_json()["soft_logout"] is False
    await trio.sleep(0.06)
    with pytest.raises(MatrixError) as e:
        await accounts.authenticate(new.access_token)
    assert e.value.to_json() == {
        "errcode": "M_UNKNOWN_TOKEN",
        "error": "access token has expired",
        "soft_logout": True,
    }
    # Logging in again with the same device ID ends the refresh chain.
    await accounts.create_session("@alice:example.org", "DEV", None)
    with pytest.raises(MatrixError):
        await refresh.refresh(new.refresh_token)


async def test_using_the_new_refresh_token_retires_the_old_one(
    db: Database, accounts: AccountService
) -> None:
    await accounts.register("carol", "pw")
    session = await accounts.create_session("@carol:example.org", "DEV", None)
    refresh = RefreshTokens(db, accounts, access_lifetime_ms=60_000, refresh_lifetime_ms=None)
    rt0, _ = await refresh.make_refreshable(session.access_token)
    first = await refresh.refresh(rt0)
    second = await refresh.refresh(first.refresh_token)  # first's access token never used
    # Using first's refresh token retired rt0; first's stays valid until second is used.
    with pytest.raises(MatrixError) as e:
        await refresh.refresh(rt0)
    assert e.value.to_json()["soft_logout"] is False
    assert (await accounts.authenticate(second.access_token)).user_id == "@carol:example.org"
    with pytest.raises(MatrixError) as e:
        await refresh.refresh(first.refresh_token)
    assert e.value.to_json()["soft_logout"] is False
    # One access token and one refresh token are left for the device.
    counts = await db.read(
        lambda conn: conn.execute(
            "SELECT count(DISTINCT a.id), count(r.id) FROM access_tokens a"
            " LEFT JOIN refresh_tokens r ON r.access_token_id = a.id"
            " WHERE a.user_id = '@carol:example.org'"
        ).fetchone()
    )
    assert tuple(counts) == (1, 1)


async def test_expired_refresh_token_is_soft_logout(db: Database, accounts: AccountService) -> None:
    await accounts.register("bob", "pw")
    session = await accounts.create_session("@bob:example.org", None, None)
    refresh = RefreshTokens(db, accounts, access_lifetime_ms=1000, refresh_lifetime_ms=10)
    rt, _ = await refresh.make_refreshable(session.access_token)
    await trio.sleep(0.02)
    with pytest.raises(MatrixError) as e:
        await refresh.refresh(rt)
    assert e.value.to_json()["soft_logout"] is True


async def test_device_activity_is_bounded_and_flushed(
    db: Database, accounts: AccountService
) -> None:
    await accounts.register("carol", "pw")
    user = "@carol:example.org"
    for dev in ("A", "B"):
        await accounts.create_session(user, dev, None)
    activity = DeviceActivity(db, max_pending=1)
    devices = DeviceManager(db, accounts, activity)
    activity.seen(user, "A", "10.0.0.1")
    activity.seen(user, "B", "10.0.0.2")  # past the bound: dropped
    activity.seen(user, "A", "10.0.0.3")  # an update of a noted device is kept
    assert activity.dropped == 1
    listed = {d.device_id: d for d in await devices.list(user)}
    assert listed["A"].last_seen_ip == "10.0.0.3"
    assert listed["B"].last_seen_ts is None
    await activity.flush()
    assert activity.pending(user, "A") is None

    def row(conn: sqlite3.Connection) -> tuple[int, str]:
        r = conn.execute(
            "SELECT last_seen_ts, last_seen_ip FROM devices WHERE device_id = 'A'"
        ).fetchone()
        return int(r[0]), str(r[1])

    ts, ip = await db.read(row)
    assert ip == "10.0.0.3"
    assert abs(ts - time.time() * 1000) < 60_000
    # Deleting a device revokes its token at once (the cache too).
    token = (await accounts.create_session(user, "C", None)).access_token
    assert (await accounts.authenticate(token)).device_id == "C"
    await devices.delete(user, ["C", "NOPE"])
    with pytest.raises(MatrixError):
        await accounts.authenticate(token)


# --- config ------------------------------------------------------------------------


def test_config_keys_and_defaults(tmp_path: Path) -> None:
    from pocketserver.config.loader import ConfigError

    config = make_config(tmp_path)
    assert config.allow_guest_access is False
    assert config.refreshable_access_token_lifetime_ms == 5 * 60_000
    assert config.refresh_token_lifetime_ms is None
    assert config.rc_registration_token_validity.burst_count == 5
    config = make_config(
        tmp_path,
        allow_guest_access=True,
        refreshable_access_token_lifetime="1h",
        refresh_token_lifetime="30d",
    )
    assert config.refreshable_access_token_lifetime_ms == 3_600_000
    assert config.refresh_token_lifetime_ms == 30 * 86_400_000
    assert config.allow_guest_access is True
    assert not any("allow_guest_access" in w for w in config.warnings)
    for bad in ({"refreshable_access_token_lifetime": 0}, {"allow_guest_access": "maybe"}):
        with pytest.raises(ConfigError):
            make_config(tmp_path, **bad)


async def test_device_activity_keeps_the_user_agent(db: Database, accounts: AccountService) -> None:
    await accounts.register("dave", "pw")
    user = "@dave:example.org"
    await accounts.create_session(user, "D", None)
    activity = DeviceActivity(db)
    devices = DeviceManager(db, accounts, activity)
    activity.seen(user, "D", "10.0.0.4", "Agent/" + "x" * 1000)
    (pending,) = await devices.list(user)
    assert pending.last_seen_user_agent == "Agent/" + "x" * 250  # cut to 256 characters
    await activity.flush()
    (stored,) = await devices.list(user)
    assert stored.last_seen_user_agent == pending.last_seen_user_agent
    assert "last_seen_user_agent" not in stored.to_json()  # not part of the spec's Device
