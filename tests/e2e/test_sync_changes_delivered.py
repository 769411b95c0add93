"""Incremental /sync delivers every change exactly once, whatever the order of changes
and syncs: the quiet fast paths (no room work when no event happened, the to-device
empty-inbox memory, cached key counts, per-stream skips) must never drop or repeat one.

Hypothesis draws sequences of changes of every kind (messages, invites and joins,
global and room account data, receipts, typing, presence, to-device messages, device
list changes, one-time key uploads and claims) interleaved with incremental syncs and
long-polls, against the real server; each sync's answer is checked against a model of
what is pending.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.e2e_keys.keys import device_keys, signed_otk
from tests.harness import RunningServer

V3 = "/_matrix/client/v3"
ALGORITHM = "signed_curve25519"
_names = itertools.count(1)

CHANGES = (
    "message",
    "invite",
    "join",
    "account_data",
    "room_account_data",
    "receipt",
    "own_receipt",
    "typing",
    "presence",
    "to_device",
    "device_list",
    "otk_upload",
    "otk_claim",
)
WAKING = tuple(c for c in CHANGES if not c.startswith("otk_"))
"""One-time key count changes are sent in every response but do not end a long-poll
(as in Synapse: its SyncResult.__bool__ leaves the counts out)."""

STEP = st.one_of(
    st.sampled_from(CHANGES),
    st.just("sync"),
    st.sampled_from(WAKING).map(lambda kind: "wait:" + kind),
)


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


def _ok(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


@dataclass
class World:
    """Alice changes things; Bob's device syncs. What Bob must see next is pending."""

    server: RunningServer
    http: httpx.Client
    alice: dict[str, str]
    bob: dict[str, str]
    bob_key: nacl.signing.SigningKey
    room: str
    token: str
    joined: list[str]
    invited: list[str] = field(default_factory=list)
    n: itertools.count = field(default_factory=lambda: itertools.count(1))
    unread: dict[str, int] = field(default_factory=dict)
    """Alice's messages per room (Bob never reads them: all notify, all unread)."""
    # What the next sync must carry (and no later one may repeat):
    events: set[str] = field(default_factory=set)
    invites: set[str] = field(default_factory=set)
    joins: set[str] = field(default_factory=set)
    account_data: set[str] = field(default_factory=set)
    room_account_data: set[str] = field(default_factory=set)
    receipts: dict[str, str] = field(default_factory=dict)
    typing: dict[str, bool] = field(default_factory=dict)
    typing_now: dict[str, bool] = field(default_factory=dict)
    presence: str | None = None
    presence_now: str | None = None
    latest: dict[str, str] = field(default_factory=dict)
    """Alice's latest message per room."""
    own_read: str | None = None
    """The event of Bob's latest receipt."""
    last_message: dict[str, str] = field(default_factory=dict)
    """Alice's latest message per room, while she has no receipt on it yet."""
    to_device: set[int] = field(default_factory=set)
    device_list: bool = False
    alice_device: dict[str, str] | None = None
    """A device of Alice's logged in by a device list change, to upload keys next."""
    otks: int = 0
    fallback_unused: bool = True
    seen: set[object] = field(default_factory=set)

    # --- changes --------------------------------------------------------------------

    def change(self, kind: str) -> None:
        getattr(self, "_" + kind)()

    def _message(self, room: str | None = None) -> str:
        room = room or self.joined[next(self.n) % len(self.joined)]
        r = self.http.put(
            f"{V3}/rooms/{quote(room)}/send/m.room.message/t{next(self.n)}",
            headers=_auth(self.alice),
            json={"msgtype": "m.text", "body": "hello"},
        )
        event_id = str(_ok(r)["event_id"])
        self.events.add(event_id)
        self.unread[room] = self.unread.get(room, 0) + 1
        self.last_message[room] = event_id
        self.latest[room] = event_id
        return event_id

    def _invite(self) -> None:
        r = self.http.post(
            f"{V3}/createRoom",
            headers=_auth(self.alice),
            json={"preset": "private_chat", "invite": [self.bob["user_id"]]},
        )
        room = str(_ok(r)["room_id"])
        self.invited.append(room)
        self.invites.add(room)

    @property
    def focus(self) -> str:
        """The room of ephemeral changes and room account data: the latest joined."""
        return self.joined[-1]

    def prepare(self, kind: str) -> None:
        """What a change needs first (so that a long-poll is woken by the change itself)."""
        if kind == "join" and not self.invited:
            self._invite()
        elif (kind == "receipt" and self.focus not in self.last_message) or (
            kind == "own_receipt" and self.latest.get(self.focus) in (None, self.own_read)
        ):
            self._message(self.focus)

    def _join(self) -> None:
        self.prepare("join")
        room = self.invited.pop(0)
        self.invites.discard(room)  # may or may not have been seen as an invite yet
        _ok(self.http.post(f"{V3}/rooms/{quote(room)}/join", headers=_auth(self.bob), json={}))
        self.joined.append(room)
        self.joins.add(room)
        # Bob now shares a new room with Alice: her devices and presence come again.
        self.device_list = True
        self.presence = self.presence_now

    def _account_data(self) -> None:
        kind = f"org.example.global{next(self.n)}"
        url = f"{V3}/user/{quote(self.bob['user_id'])}/account_data/{kind}"
        _ok(self.http.put(url, headers=_auth(self.bob), json={"v": kind}))
        self.account_data.add(kind)

    def _room_account_data(self) -> None:
        kind = f"org.example.room{next(self.n)}"
        url = (
            f"{V3}/user/{quote(self.bob['user_id'])}/rooms/{quote(self.focus)}/account_data/{kind}"
        )
        _ok(self.http.put(url, headers=_auth(self.bob), json={"v": kind}))
        self.room_account_data.add(kind)

    def _receipt(self) -> None:
        self.prepare("receipt")
        event_id = self.last_message.pop(self.focus)
        url = f"{V3}/rooms/{quote(self.focus)}/receipt/m.read/{quote(event_id)}"
        _ok(self.http.post(url, headers=_auth(self.alice), json={}))
        self.receipts[self.focus] = event_id  # replaces an earlier one not yet sent

    def _own_receipt(self) -> None:
        """Bob reads up to Alice's latest message: his unread count there drops to 0."""
        self.prepare("own_receipt")
        event_id = self.own_read = self.latest[self.focus]
        url = f"{V3}/rooms/{quote(self.focus)}/receipt/m.read/{quote(event_id)}"
        _ok(self.http.post(url, headers=_auth(self.bob), json={}))
        self.unread[self.focus] = 0

    def _typing(self) -> None:
        room = self.focus
        self.typing_now[room] = typing = not self.typing_now.get(room, False)
        url = f"{V3}/rooms/{quote(room)}/typing/{quote(self.alice['user_id'])}"
        body = {"typing": typing, "timeout": 60000}
        _ok(self.http.put(url, headers=_auth(self.alice), json=body))
        self.typing[room] = typing

    def _presence(self) -> None:
        status = f"status {next(self.n)}"
        url = f"{V3}/presence/{quote(self.alice['user_id'])}/status"
        body = {"presence": "online", "status_msg": status}
        _ok(self.http.put(url, headers=_auth(self.alice), json=body))
        self.presence = self.presence_now = status

    def _to_device(self) -> None:
        k = next(self.n)
        body = {"messages": {self.bob["user_id"]: {self.bob["device_id"]: {"n": k}}}}
        url = f"{V3}/sendToDevice/org.example.test/d{k}"
        _ok(self.http.put(url, headers=_auth(self.alice), json=body))
        self.to_device.add(k)

    def _device_list(self) -> None:
        """One change of Alice's device list: a new device (a login), or new keys of a
        device she has (a login and a key upload are two changes, which a long-poll
        could see apart)."""
        if self.alice_device is None:
            self.alice_device = self.server.login(self.alice["user_id"]).json()
        else:
            device = self.alice_device
            keys = device_keys(
                device["user_id"], device["device_id"], nacl.signing.SigningKey.generate()
            )
            r = self.http.post(
                f"{V3}/keys/upload", headers=_auth(device), json={"device_keys": keys}
            )
            _ok(r)
            self.alice_device = None
        self.device_list = True

    def _otk_upload(self) -> None:
        keys = {
            f"{ALGORITHM}:K{k}": signed_otk(
                self.bob["user_id"], self.bob["device_id"], self.bob_key, k
            )
            for k in (next(self.n), next(self.n))
        }
        r = self.http.post(
            f"{V3}/keys/upload", headers=_auth(self.bob), json={"one_time_keys": keys}
        )
        self.otks += 2
        assert _ok(r)["one_time_key_counts"].get(ALGORITHM) == self.otks

    def _otk_claim(self) -> None:
        body = {"one_time_keys": {self.bob["user_id"]: {self.bob["device_id"]: ALGORITHM}}}
        claimed = _ok(self.http.post(f"{V3}/keys/claim", headers=_auth(self.alice), json=body))
        got = claimed["one_time_keys"].get(self.bob["user_id"], {}).get(self.bob["device_id"])
        if self.otks:
            self.otks -= 1
            assert got
        elif self.fallback_unused:
            self.fallback_unused = False
            assert got

    # --- syncs ----------------------------------------------------------------------

    def sync(self, timeout_ms: int = 0) -> dict:
        params: dict[str, str | int] = {"since": self.token, "timeout": timeout_ms}
        body = _ok(self.http.get(f"{V3}/sync", headers=_auth(self.bob), params=params))
        self.check(body)
        self.token = body["next_batch"]
        return body

    def wait_for(self, kind: str) -> None:
        """A long-poll that the change must end promptly."""
        found: list[dict] = []
        started = time.monotonic()

        def poll() -> None:
            with self.server.client() as own:
                params: dict[str, str | int] = {"since": self.token, "timeout": 20_000}
                r = own.get(f"{V3}/sync", headers=_auth(self.bob), params=params)
                found.append(_ok(r))

        thread = threading.Thread(target=poll)
        self.prepare(kind)
        self.settle()
        thread.start()
        time.sleep(0.15)
        self.change(kind)
        thread.join(30)
        assert found, "the long-poll did not answer"
        assert time.monotonic() - started < 10, f"a {kind} change did not wake the long-poll"
        self.check(found[0])
        self.token = found[0]["next_batch"]

    def settle(self) -> None:
        """Take in whatever is pending, so that a long-poll starts from a quiet point."""
        self.sync()

    def check(self, body: dict) -> None:
        """The response carries exactly what is pending, and nothing seen before."""
        assert body["next_batch"].startswith("p")
        assert body["device_one_time_keys_count"] == {ALGORITHM: self.otks}
        unused = [ALGORITHM] if self.fallback_unused else []
        assert body["device_unused_fallback_key_types"] == unused
        rooms = body["rooms"]
        join = rooms["join"]
        timeline = {
            e["event_id"]
            for entry in join.values()
            for e in entry["timeline"]["events"]
            if e["type"] == "m.room.message"
        }
        self._exactly(timeline, self.events, "event")
        self.events = set()
        self._exactly(set(rooms["invite"]), self.invites, "invite", optional=set(self.invited))
        self.invites = set()
        newly = {r for r in join if r in self.joins}
        assert newly == self.joins, "a joined room was not sent"
        for room in newly:
            members = [
                e
                for e in (*join[room]["timeline"]["events"], *join[room]["state"]["events"])
                if e["type"] == "m.room.member" and e["state_key"] == self.bob["user_id"]
            ]
            assert members, "a newly joined room came without the user's join"
        self.joins = set()
        globals_ = {e["type"] for e in body["account_data"]["events"]}
        self._exactly(
            {t for t in globals_ if t.startswith("org.example.")}, self.account_data, "global"
        )
        self.account_data = set()
        room_data = {e["type"] for entry in join.values() for e in entry["account_data"]["events"]}
        self._exactly(room_data, self.room_account_data, "room account data")
        self.room_account_data = set()
        ephemeral = {r: entry["ephemeral"]["events"] for r, entry in join.items()}
        receipts = {
            event_id
            for events in ephemeral.values()
            for e in events
            if e["type"] == "m.receipt"
            for event_id, kinds in e["content"].items()
            if self.alice["user_id"] in kinds.get("m.read", {})
        }
        self._exactly(receipts, set(self.receipts.values()), "receipt")
        self.receipts = {}
        typing = {
            room: e["content"]["user_ids"]
            for room, events in ephemeral.items()
            for e in events
            if e["type"] == "m.typing"
        }
        expected = {r: [self.alice["user_id"]] if on else [] for r, on in self.typing.items()}
        for room in self.joins:  # a room sent from scratch carries its typers, if any
            if self.typing_now.get(room):
                expected[room] = [self.alice["user_id"]]
        assert typing == expected, "typing dropped or repeated"
        self.typing = {}
        presence = [
            e["content"].get("status_msg")
            for e in body["presence"]["events"]
            if e["sender"] == self.alice["user_id"]
        ]
        assert presence == ([self.presence] if self.presence else [])
        self.presence = None
        messages = {
            e["content"]["n"]
            for e in body["to_device"]["events"]
            if e["type"] == "org.example.test"
        }
        self._exactly(messages, self.to_device, "to-device message")
        self.to_device = set()
        changed = self.alice["user_id"] in body["device_lists"]["changed"]
        assert changed == self.device_list, "device list change dropped or repeated"
        self.device_list = False
        for room_id, entry in join.items():
            counts = entry["unread_notifications"]
            assert counts["notification_count"] == self.unread.get(room_id, 0), room_id

    def _exactly(self, got: set, pending: set, what: str, optional: set | None = None) -> None:
        for item in got:
            key = (what, item)
            assert key not in self.seen, f"{what} {item} sent twice"
            self.seen.add(key)
        missing = pending - got
        assert not missing, f"{what} dropped: {missing}"
        extra = got - pending - (optional or set())
        assert not extra, f"{what} not expected: {extra}"


@pytest.fixture(scope="module")
def http(server: RunningServer):
    with server.client() as client:
        yield client


def _world(server: RunningServer, http: httpx.Client) -> World:
    n = next(_names)
    alice = server.register(f"fastpath{n}a")
    bob = server.register(f"fastpath{n}b")
    bob_key = nacl.signing.SigningKey.generate()
    upload = {
        "device_keys": device_keys(bob["user_id"], bob["device_id"], bob_key),
        "fallback_keys": {
            f"{ALGORITHM}:F": signed_otk(bob["user_id"], bob["device_id"], bob_key, 0, True)
        },
    }
    _ok(http.post(f"{V3}/keys/upload", headers=_auth(bob), json=upload))
    r = http.post(f"{V3}/createRoom", headers=_auth(alice), json={"preset": "public_chat"})
    room = str(_ok(r)["room_id"])
    _ok(http.post(f"{V3}/rooms/{quote(room)}/join", headers=_auth(bob), json={}))
    first = _ok(http.get(f"{V3}/sync", headers=_auth(bob)))
    assert first["device_one_time_keys_count"] == {ALGORITHM: 0}
    return World(server, http, alice, bob, bob_key, room, first["next_batch"], [room])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=1, max_size=14))
def test_every_change_is_delivered_exactly_once(
    server: RunningServer, http: httpx.Client, steps: list[str]
) -> None:
    world = _world(server, http)
    note(f"steps: {steps}")
    for step in steps:
        if step == "sync":
            world.sync()
        elif step.startswith("wait:"):
            world.wait_for(step.removeprefix("wait:"))
        else:
            world.change(step)
    world.sync()
    world.sync()  # quiet: nothing pending, nothing repeated


@pytest.mark.parametrize("kind", WAKING)
def test_each_kind_of_change_wakes_a_long_poll(
    server: RunningServer, http: httpx.Client, kind: str
) -> None:
    world = _world(server, http)
    world.sync()
    world.wait_for(kind)
    world.sync()
