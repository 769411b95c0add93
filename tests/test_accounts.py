"""Accounts: password hashes, tokens, shared-secret registration and the AccountService."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import trio

from pocketserver.accounts import passwords, tokens
from pocketserver.accounts.service import AccountService, Requester
from pocketserver.accounts.shared_secret import NonceStore, mac_matches, registration_mac
from pocketserver.cache import MemoryBudget
from pocketserver.config import Config, parse_config
from pocketserver.errors import MatrixError
from pocketserver.storage import devices as device_store
from pocketserver.storage import users as user_store
from pocketserver.storage.db import Database

SERVER = "example.org"

# --- passwords -------------------------------------------------------------------------


def test_hash_and_check_round_trip() -> None:
    hashed = passwords.hash_password("correct horse", rounds=4)
    assert re.fullmatch(r"\$2b\$04\$[./A-Za-z0-9]{53}", hashed)
    assert passwords.check_password("correct horse", hashed)
    assert not passwords.check_password("correct horsE", hashed)
    assert not passwords.check_password("", hashed)


def test_hashes_are_salted() -> None:
    assert passwords.hash_password("same", rounds=4) != passwords.hash_password("same", rounds=4)


def test_pepper_is_part_of_the_hash() -> None:
    hashed = passwords.hash_password("secret", pepper="PEP", rounds=4)
    assert passwords.check_password("secret", hashed, pepper="PEP")
    assert not passwords.check_password("secret", hashed)
    assert not passwords.check_password("secret", hashed, pepper="OTHER")
    # Synapse's format: bcrypt of the password followed by the pepper.
    assert bcrypt.checkpw(b"secretPEP", hashed.encode())


def test_unicode_passwords_are_nfkc_normalised() -> None:
    composed = "caf\u00e9 \uff21"  # é as one code point, fullwidth A
    decomposed = "cafe\u0301 A"  # e + combining acute, plain A
    hashed = passwords.hash_password(composed, rounds=4)
    assert passwords.check_password(decomposed, hashed)
    hashed = passwords.hash_password(decomposed, rounds=4)
    assert passwords.check_password(composed, hashed)
    assert not passwords.check_password("cafe A", hashed)
    # What Synapse stores: bcrypt of the NFKC form, UTF-8 encoded.
    assert bcrypt.checkpw("caf\u00e9 A".encode(), hashed.encode())


def test_passwords_longer_than_72_bytes_still_verify() -> None:
    long_password = "x" * 70 + "\u00e9\u00e9\u00e9"  # 76 bytes in UTF-8
    hashed = passwords.hash_password(long_password, rounds=4)
    assert passwords.check_password(long_password, hashed)
    # Only the first 72 bytes count, as with Synapse and older bcrypt.
    assert passwords.check_password("x" * 70 + "\u00e9" + "zzz", hashed)
    assert not passwords.check_password("x" * 70, hashed)
    # A hash of the first 72 bytes made elsewhere verifies the long password.
    elsewhere = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4)).decode()
    assert passwords.check_password(long_password, elsewhere)


def test_hash_made_by_plain_bcrypt_verifies() -> None:
    """Hashes in a database copied from Synapse keep working."""
    pw = "synapse-password"
    hashed = bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()
    assert passwords.check_password(pw, hashed)
    assert not passwords.check_password(pw + "!", hashed)
    legacy = hashed.replace("$2b$", "$2a$", 1)
    assert passwords.check_password(pw, legacy)


@pytest.mark.parametrize(
    "bad_hash",
    [
        None,
        "",
        "not a hash",
        "$2b$04$",
        "$2b$04$tooshort",
        "$2b$99$" + "a" * 53,
        "$1$md5$hash",
        "$2b$04$\u00e9" + "a" * 52,
    ],
)
def test_malformed_hash_is_false(bad_hash: str | None) -> None:
    assert passwords.check_password("password", bad_hash) is False


# --- tokens ----------------------------------------------------------------------------


def test_access_tokens_are_unique_and_long() -> None:
    made = {tokens.new_access_token() for _ in range(1000)}
    assert len(made) == 1000
    for token in list(made)[:20]:
        assert len(token) >= 40
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


def test_hash_token_is_sha256() -> None:
    token = tokens.new_access_token()
    assert tokens.hash_token(token) == hashlib.sha256(token.encode()).digest()
    assert tokens.hash_token("abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_device_ids() -> None:
    made = {tokens.new_device_id() for _ in range(200)}
    assert len(made) == 200
    assert all(re.fullmatch(r"[A-Z]{10}", d) for d in made)


# --- shared-secret registration --------------------------------------------------------
# Expected values computed independently with hmac/hashlib by the rule in Synapse's
# admin API docs: HMAC-SHA1(secret, nonce NUL user NUL password NUL admin|notadmin
# [NUL user_type]), as hex.


def test_registration_mac_matches_synapse_vectors() -> None:
    assert (
        registration_mac("s3cret-shared", "abc123nonce", "alice", "wonderland", False)
        == "65899ca34e1db5c281daea133f3b2fcb98104aaa"
    )
    assert (
        registration_mac("s3cret-shared", "abc123nonce", "alice", "wonderland", True)
        == "4631400c6a5f1955b15bc73dfd6a034cc9cc5d96"
    )
    assert (
        registration_mac("s3cret-shared", "abc123nonce", "bot1", "p\u00e4ss", False, "bot")
        == "241cd6f8fb70b26d2fc1e9a68c5c44d4d5086182"
    )


def test_registration_mac_without_user_type_equals_none() -> None:
    with_none = registration_mac("k", "n", "u", "p", False, None)
    assert with_none == registration_mac("k", "n", "u", "p", False)
    assert with_none != registration_mac("k", "n", "u", "p", False, "bot")


def test_mac_matches() -> None:
    mac = registration_mac("k", "n", "u", "p", True)
    assert mac_matches(mac, mac)
    assert not mac_matches(mac, mac[:-1] + ("0" if mac[-1] != "0" else "1"))
    assert not mac_matches(mac, "")
    assert not mac_matches(mac, "\u00e9" * 40)


def test_nonces_are_single_use() -> None:
    store = NonceStore()
    nonce = store.issue(now=100.0)
    other = store.issue(now=100.0)
    assert nonce != other
    assert store.consume(nonce, now=101.0)
    assert not store.consume(nonce, now=101.0)
    assert store.consume(other, now=101.0)
    assert not store.consume("never-issued", now=101.0)


def test_nonces_expire() -> None:
    store = NonceStore(lifetime_s=60.0)
    nonce = store.issue(now=1000.0)
    fresh = store.issue(now=1030.0)
    assert not store.consume(nonce, now=1061.0)
    assert store.consume(fresh, now=1061.0)
    assert len(store) == 0


def test_nonce_store_is_bounded() -> None:
    store = NonceStore(max_nonces=5, lifetime_s=60.0)
    issued = [store.issue(now=10.0) for _ in range(20)]
    assert len(store) == 5
    assert not store.consume(issued[0], now=11.0)  # the oldest were dropped
    assert all(store.consume(n, now=11.0) for n in issued[-5:])


# --- AccountService ----------------------------------------------------------------------


def make_config(tmp_path: Path, **overrides: object) -> Config:
    data: dict[str, object] = {
        "server_name": SERVER,
        "listeners": [{"port": 0, "resources": [{"names": ["client"]}]}],
        "bcrypt_rounds": 4,
        "database": {"args": {"database": "home.db"}},
        **overrides,
    }
    return parse_config(data, tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "home.db", memory_bytes=4 * 1024 * 1024)
    yield database
    database.close()


@pytest.fixture
def service(tmp_path: Path, db: Database) -> AccountService:
    config = make_config(tmp_path)
    return AccountService(db, config, MemoryBudget(config.memory_budget))


async def expect_error(errcode: str, fn: object, *args: object) -> MatrixError:
    assert callable(fn)
    with pytest.raises(MatrixError) as excinfo:
        await fn(*args)
    assert excinfo.value.errcode == errcode, excinfo.value
    return excinfo.value


async def test_register_creates_a_user(service: AccountService, db: Database) -> None:
    user_id = await service.register("alice", "a long secret phrase", admin=True, user_type="bot")
    assert user_id == "@alice:example.org"
    user = await db.read(user_store.get_user, user_id)
    assert user is not None
    assert user.admin
    assert user.user_type == "bot"
    assert user.password_hash is not None
    assert user.password_hash.startswith("$2b$04$")
    assert "secret" not in user.password_hash
    assert passwords.check_password("a long secret phrase", user.password_hash)


async def test_register_without_password(service: AccountService, db: Database) -> None:
    user_id = await service.register("nopass", None)
    user = await db.read(user_store.get_user, user_id)
    assert user is not None
    assert user.password_hash is None
    await expect_error("M_FORBIDDEN", service.login_password, "nopass", "")


async def test_register_duplicate_is_user_in_use(service: AccountService) -> None:
    await service.register("alice", "pw")
    error = await expect_error("M_USER_IN_USE", service.register, "alice", "other")
    assert error.status == 400


async def test_register_duplicate_in_another_case_is_user_in_use(
    service: AccountService, db: Database
) -> None:
    # A mixed-case account from an older server (Synapse allowed them once).
    await db.write(user_store.insert_user, "@Carol:example.org", None, 1)
    await expect_error("M_USER_IN_USE", service.register, "carol", "pw")
    assert await db.read(user_store.count_users) == 1


@pytest.mark.parametrize(
    "localpart", ["", "Alice", "al ice", "al:ice", "\u00e9mile", "x" * 300, "a@b"]
)
async def test_register_invalid_localpart(service: AccountService, localpart: str) -> None:
    error = await expect_error("M_INVALID_USERNAME", service.register, localpart, "pw")
    assert error.status == 400


async def test_login_password(service: AccountService) -> None:
    user_id = await service.register("alice", "s3cret")
    assert await service.login_password("alice", "s3cret") == user_id
    assert await service.login_password("@alice:example.org", "s3cret") == user_id
    # An older client may send a different case; the canonical ID comes back.
    assert await service.login_password("ALICE", "s3cret") == user_id


async def test_login_wrong_password_or_unknown_user_is_forbidden(
    service: AccountService,
) -> None:
    await service.register("alice", "s3cret")
    wrong = await expect_error("M_FORBIDDEN", service.login_password, "alice", "guess")
    unknown = await expect_error("M_FORBIDDEN", service.login_password, "bob", "s3cret")
    other_server = await expect_error(
        "M_FORBIDDEN", service.login_password, "@alice:elsewhere.org", "s3cret"
    )
    assert wrong.status == unknown.status == other_server.status == 403
    # The same answer, so a client cannot tell which part was wrong.
    assert wrong.error == unknown.error


async def test_login_deactivated_user(service: AccountService, db: Database) -> None:
    user_id = await service.register("gone", "pw")

    def deactivate(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE users SET deactivated = 1 WHERE name = ?", (user_id,))

    await db.write(deactivate)
    error = await expect_error("M_USER_DEACTIVATED", service.login_password, "gone", "pw")
    assert error.status == 403
    await expect_error("M_FORBIDDEN", service.login_password, "gone", "wrong")


async def test_login_with_pepper(tmp_path: Path, db: Database) -> None:
    config = make_config(tmp_path, password_config={"pepper": "PEP"})
    service = AccountService(db, config, MemoryBudget(config.memory_budget))
    user_id = await service.register("alice", "pw")
    user = await db.read(user_store.get_user, user_id)
    assert user is not None
    assert user.password_hash is not None
    assert bcrypt.checkpw(b"pwPEP", user.password_hash.encode())
    assert await service.login_password("alice", "pw") == user_id


async def test_password_login_disabled(tmp_path: Path, db: Database) -> None:
    config = make_config(tmp_path, password_config={"enabled": False})
    service = AccountService(db, config, MemoryBudget(config.memory_budget))
    await service.register("alice", "pw")
    await expect_error("M_FORBIDDEN", service.login_password, "alice", "pw")


async def test_session_tokens_authenticate(service: AccountService) -> None:
    user_id = await service.register("alice", "pw")
    session = await service.create_session(user_id, None, "Phone")
    assert session.user_id == user_id
    assert re.fullmatch(r"[A-Z]{10}", session.device_id)
    requester = await service.authenticate(session.access_token)
    assert requester == Requester(user_id=user_id, device_id=session.device_id)
    # Twice (the second from the cache) gives the same answer.
    assert await service.authenticate(session.access_token) == requester
    error = await expect_error("M_UNKNOWN_TOKEN", service.authenticate, "pkt_made_up")
    assert error.status == 401


async def test_requester_is_admin_comes_with_the_token(service: AccountService) -> None:
    boss = await service.register("boss", "pw", admin=True)
    alice = await service.register("alice", "pw")
    boss_session = await service.create_session(boss, None, None)
    alice_session = await service.create_session(alice, None, None)
    for _ in range(2):  # the second answer comes from the token cache
        assert (await service.authenticate(boss_session.access_token)).is_admin is True
        assert (await service.authenticate(alice_session.access_token)).is_admin is False


async def test_token_is_stored_only_as_its_hash(service: AccountService, db: Database) -> None:
    user_id = await service.register("alice", "pw")
    session = await service.create_session(user_id, "DEV", None)

    def dump(conn: sqlite3.Connection) -> list[bytes]:
        return [bytes(r[0]) for r in conn.execute("SELECT token_hash FROM access_tokens")]

    assert await db.read(dump) == [hashlib.sha256(session.access_token.encode()).digest()]


@pytest.mark.parametrize("warm_cache", [False, True])
async def test_login_with_an_existing_device_id_replaces_its_token(
    service: AccountService, warm_cache: bool
) -> None:
    user_id = await service.register("alice", "pw")
    first = await service.create_session(user_id, "PHONE", None)
    other = await service.create_session(user_id, "LAPTOP", None)
    if warm_cache:
        await service.authenticate(first.access_token)
        await service.authenticate(other.access_token)
    second = await service.create_session(user_id, "PHONE", None)
    assert second.device_id == "PHONE"
    assert second.access_token != first.access_token
    await expect_error("M_UNKNOWN_TOKEN", service.authenticate, first.access_token)
    assert (await service.authenticate(second.access_token)).device_id == "PHONE"
    assert (await service.authenticate(other.access_token)).device_id == "LAPTOP"


@pytest.mark.parametrize("warm_cache", [False, True])
async def test_logout_invalidates_only_that_device(
    service: AccountService, warm_cache: bool
) -> None:
    user_id = await service.register("alice", "pw")
    phone = await service.create_session(user_id, "PHONE", None)
    laptop = await service.create_session(user_id, "LAPTOP", None)
    if warm_cache:
        await service.authenticate(phone.access_token)
        await service.authenticate(laptop.access_token)
    await service.logout(Requester(user_id, "PHONE"))
    await expect_error("M_UNKNOWN_TOKEN", service.authenticate, phone.access_token)
    assert (await service.authenticate(laptop.access_token)).device_id == "LAPTOP"


@pytest.mark.parametrize("warm_cache", [False, True])
async def test_logout_all_invalidates_every_token_of_the_user(
    service: AccountService, db: Database, warm_cache: bool
) -> None:
    alice = await service.register("alice", "pw")
    bob = await service.register("bob", "pw")
    sessions = [await service.create_session(alice, None, None) for _ in range(3)]
    bobs = await service.create_session(bob, None, None)
    if warm_cache:
        for s in [*sessions, bobs]:
            await service.authenticate(s.access_token)
    await service.logout_all(alice)
    for s in sessions:
        await expect_error("M_UNKNOWN_TOKEN", service.authenticate, s.access_token)
        assert not await db.read(device_store.device_exists, alice, s.device_id)
    assert (await service.authenticate(bobs.access_token)).user_id == bob


async def test_expired_token_is_unknown(service: AccountService, db: Database) -> None:
    user_id = await service.register("alice", "pw")
    await service.create_session(user_id, "DEV", None)
    token = tokens.new_access_token()
    await db.write(device_store.insert_token, tokens.hash_token(token), user_id, "DEV", 1, 2)
    await expect_error("M_UNKNOWN_TOKEN", service.authenticate, token)


@pytest.mark.parametrize(("device_id", "name"), [("", None), ("D" * 256, None), ("D", "n" * 256)])
async def test_create_session_rejects_bad_device_values(
    service: AccountService, device_id: str, name: str | None
) -> None:
    user_id = await service.register("alice", "pw")
    await expect_error("M_INVALID_PARAM", service.create_session, user_id, device_id, name)


async def test_register_with_unencodable_password_is_a_matrix_error(
    service: AccountService, db: Database
) -> None:
    with pytest.raises(MatrixError) as excinfo:
        await service.register("alice", "pass\ud800word")
    assert excinfo.value.status == 400
    assert await db.read(user_store.count_users) == 0


async def test_login_with_unencodable_password_is_forbidden(service: AccountService) -> None:
    await service.register("alice", "pw")
    await expect_error("M_FORBIDDEN", service.login_password, "alice", "pw\ud800")


async def test_logout_during_authenticate_does_not_leave_the_token_valid(
    service: AccountService, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_id = await service.register("alice", "pw")
    session = await service.create_session(user_id, "DEV", None)
    looked_up = threading.Event()
    resume = threading.Event()
    real_lookup = device_store.get_token_owner

    def slow_lookup(conn: sqlite3.Connection, token_hash: bytes) -> object:
        owner = real_lookup(conn, token_hash)
        looked_up.set()
        resume.wait(5)
        return owner

    monkeypatch.setattr(device_store, "get_token_owner", slow_lookup)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(service.authenticate, session.access_token)
            await trio.to_thread.run_sync(looked_up.wait, 5)
            await service.logout(Requester(user_id, "DEV"))
            resume.set()
    monkeypatch.setattr(device_store, "get_token_owner", real_lookup)
    await expect_error("M_UNKNOWN_TOKEN", service.authenticate, session.access_token)


async def test_concurrent_registrations_of_one_name_make_one_account(
    service: AccountService, db: Database
) -> None:
    outcomes: list[str] = []

    async def attempt() -> None:
        try:
            outcomes.append(await service.register("race", "pw"))
        except MatrixError as e:
            outcomes.append(e.errcode)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(attempt)
    assert sorted(outcomes) == ["@race:example.org"] + ["M_USER_IN_USE"] * 4
    assert await db.read(user_store.count_users) == 1
