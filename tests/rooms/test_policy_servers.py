"""Policy servers in the room writer (spec v1.18): our events are signed by the room's
policy server before they are stored, or refused; events received without a valid
policy signature are asked for one again, then soft-failed."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from pocketserver.core.crypto import (
    decode_signing_key_base64,
    encode_base64,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
    sign_json,
)
from pocketserver.core.events import compute_event_id
from pocketserver.core.policy_server import (
    PolicyServer,
    add_policy_signature,
    has_valid_signature,
    policy_from_content,
)
from pocketserver.core.redaction import redact
from pocketserver.errors import MatrixError
from pocketserver.federation.errors import FederationHttpError, FederationTimeout
from pocketserver.federation.inbound import PduPipeline
from pocketserver.federation.policy_signing import SIGN_PATH, PolicySigning
from pocketserver.rooms.create import RoomSettings, create_room
from pocketserver.rooms.store import RoomStore
from pocketserver.rooms.writer import RoomWriter
from pocketserver.storage.db import Database

from .conftest import (
    ALICE,
    LOCAL,
    RBOB,
    RCAROL,
    REMOTE,
    RemoteServer,
    current_state,
    event_count,
    extremities,
    stored,
)
from .test_federation_inbound import FakeKeyring

MSG = {"msgtype": "m.text", "body": "hello"}
RDAVE = f"@dave:{REMOTE}"
POLICY_KEY = generate_signing_key("policy_server")
FORGER_KEY = generate_signing_key("policy_server")
POLICY_CONTENT = {
    "via": REMOTE,
    "public_keys": {"ed25519": encode_verify_key_base64(get_verify_key(POLICY_KEY))},
}


def policy_answer(pdu: dict[str, Any], version: str, key: Any = POLICY_KEY) -> dict[str, Any]:
    signed = sign_json(redact(dict(pdu), version), REMOTE, key)
    return {REMOTE: signed["signatures"][REMOTE]}  # type: ignore[index]


class FakePolicyServer:
    """``POST /_matrix/policy/v1/sign`` as a policy server answers it."""

    def __init__(self) -> None:
        self.mode = "sign"
        self.asked: list[tuple[str, str, dict[str, Any]]] = []

    async def post_json(self, destination: str, path: str, content: Any, **kw: Any) -> object:
        await trio.lowlevel.checkpoint()
        self.asked.append((destination, path, content))
        assert kw["timeout_s"] <= 10
        if self.mode == "refuse":
            raise FederationHttpError(destination, 400, "M_FORBIDDEN", "spam!", None)
        if self.mode == "down":
            raise FederationTimeout(destination, "timed out")
        if self.mode == "broken":
            raise FederationHttpError(destination, 500, "M_UNKNOWN", "oops", None)
        if self.mode == "empty":
            return {}
        key = FORGER_KEY if self.mode == "forge" else POLICY_KEY
        return policy_answer(content, "10", key)


@pytest.fixture
def ps() -> FakePolicyServer:
    return FakePolicyServer()


@pytest.fixture
def signing(store: RoomStore, ps: FakePolicyServer, writer: RoomWriter) -> PolicySigning:
    sign = PolicySigning(ps, store, LOCAL, timeout_s=1.0)
    writer.set_policy_signer(sign.sign_local, sign.resign_remote)
    return sign


def _policy() -> PolicyServer:
    policy = policy_from_content(POLICY_CONTENT, LOCAL)
    assert policy is not None
    return policy


async def _room(writer: RoomWriter, remote: RemoteServer, content: Any = POLICY_CONTENT) -> str:
    """A public room of ours that RBOB (on the policy server's name) joined, whose
    m.room.policy names ``content``."""
    room_id = await create_room(writer, ALICE, RoomSettings("10", preset="public_chat"))
    joined = await remote.send(writer, room_id, RBOB, "m.room.member", {"membership": "join"}, RBOB)
    assert joined.accepted
    await writer.send_event(room_id, ALICE, "m.room.policy", content, "")
    return room_id


async def test_our_events_are_signed_by_the_policy_server(
    writer: RoomWriter,
    remote: RemoteServer,
    ps: FakePolicyServer,
    signing: PolicySigning,
    db: Database,
) -> None:
    room_id = await _room(writer, remote)
    assert ps.asked == []  # the m.room.policy state event is never sent to be signed
    sent = await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    [(destination, path, body)] = ps.asked
    assert (destination, path) == (REMOTE, SIGN_PATH)
    assert body["content"] == MSG
    assert LOCAL in body["signatures"]
    pdu = stored(db, sent.event_id).pdu
    assert has_valid_signature(pdu, "10", _policy())
    assert LOCAL in pdu["signatures"]  # type: ignore[operator]
    assert compute_event_id(pdu, "10") == sent.event_id
    # state events too (a topic)
    topic = await writer.send_event(room_id, ALICE, "m.room.topic", {"topic": "t"}, "")
    assert has_valid_signature(stored(db, topic.event_id).pdu, "10", _policy())


@pytest.mark.parametrize(
    ("mode", "status", "errcode", "error"),
    [
        ("refuse", 400, "M_FORBIDDEN", "spam!"),  # the policy server's error, verbatim
        ("forge", 403, "M_FORBIDDEN", "probable spam"),
        ("empty", 403, "M_FORBIDDEN", "probable spam"),
        ("down", 502, "M_UNKNOWN", "policy server is unavailable"),
        ("broken", 502, "M_UNKNOWN", "policy server is unavailable"),
    ],
)
async def test_an_event_the_policy_server_does_not_sign_is_refused_and_not_stored(
    writer: RoomWriter,
    remote: RemoteServer,
    ps: FakePolicyServer,
    signing: PolicySigning,
    db: Database,
    mode: str,
    status: int,
    errcode: str,
    error: str,
) -> None:
    room_id = await _room(writer, remote)
    before = (event_count(db), extremities(db, room_id), current_state(db, room_id))
    ps.mode = mode
    with pytest.raises(MatrixError) as e:
        await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    assert (e.value.status, e.value.errcode) == (status, errcode)
    assert error in e.value.error
    with pytest.raises(MatrixError):
        await writer.send_event(room_id, ALICE, "m.room.name", {"name": "x"}, "")
    assert (event_count(db), extremities(db, room_id), current_state(db, room_id)) == before
    # disabling the policy server needs no signature (the spec's way out of an outage)
    await writer.send_event(room_id, ALICE, "m.room.policy", {}, "")
    ps.asked.clear()
    await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    assert ps.asked == []


async def test_no_policy_server_no_asking(
    writer: RoomWriter, remote: RemoteServer, ps: FakePolicyServer, signing: PolicySigning
) -> None:
    ps.mode = "refuse"
    bad = {**POLICY_CONTENT, "public_keys": {}}
    room_id = await _room(writer, remote, bad)
    await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    ours = {**POLICY_CONTENT, "via": LOCAL}  # we are not a policy server (as Synapse)
    await writer.send_event(room_id, ALICE, "m.room.policy", ours, "")
    await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    assert ps.asked == []
    # via with no joined user: not in use
    await writer.send_event(room_id, ALICE, "m.room.policy", POLICY_CONTENT, "")
    # (the policy server's leave needs its own signature: "The Policy Server can evict
    # itself from the room to also disable usage immediately")
    _, leave = await remote.event(
        writer, room_id, RBOB, "m.room.member", {"membership": "leave"}, RBOB
    )
    leave = add_policy_signature(leave, _policy(), policy_answer(leave, "10"))
    left = await writer.receive_pdu(leave, "10", remote.keys)
    assert left.accepted
    await writer.send_event(room_id, ALICE, "m.room.message", MSG)
    assert ps.asked == []


async def _remote_message(
    writer: RoomWriter, remote: RemoteServer, room_id: str, key: Any | None
) -> dict[str, Any]:
    _, pdu = await remote.event(writer, room_id, RBOB, "m.room.message", MSG)
    if key is not None:
        pdu = add_policy_signature(pdu, _policy(), policy_answer(pdu, "10", key))
    return pdu


async def test_received_events_need_a_valid_policy_signature(
    writer: RoomWriter,
    remote: RemoteServer,
    ps: FakePolicyServer,
    signing: PolicySigning,
    db: Database,
) -> None:
    room_id = await _room(writer, remote)
    ps.mode = "refuse"  # asked again, it does not sign
    good = await writer.receive_pdu(
        await _remote_message(writer, remote, room_id, POLICY_KEY), "10", remote.keys
    )
    assert good.accepted
    assert extremities(db, room_id) == {good.event_id}
    # the remote's server key bytes, under the policy key ID: not the room's policy key
    server_key = decode_signing_key_base64(
        "ed25519", "policy_server", encode_base64(remote.signing_key.encode())
    )
    for key in (None, FORGER_KEY, server_key):  # missing, forged, the server's key
        pdu = await _remote_message(writer, remote, room_id, key)
        got = await writer.receive_pdu(pdu, "10", remote.keys)
        assert got.soft_failed, key
        assert stored(db, got.event_id).soft_failed
    assert extremities(db, room_id) == {good.event_id}
    # a state event without the signature changes nothing
    state = current_state(db, room_id)
    _, rename = await remote.event(
        writer, room_id, RBOB, "m.room.member", {"membership": "join", "displayname": "x"}, RBOB
    )
    got = await writer.receive_pdu(rename, "10", remote.keys)
    assert got.soft_failed
    assert current_state(db, room_id) == state
    # only the ones without a valid signature were sent to the policy server again
    assert len(ps.asked) == 4


async def test_a_join_the_policy_server_signs_when_asked_again_is_accepted(
    writer: RoomWriter,
    remote: RemoteServer,
    ps: FakePolicyServer,
    signing: PolicySigning,
    db: Database,
) -> None:
    """A server that does not ask the policy server itself (Synapse does not for its
    joins through ``send_join``): the resident asks, as Synapse's resident does
    (federation_server.py ``_on_send_membership_event`` -> ``is_event_allowed``)."""
    room_id = await _room(writer, remote)
    join = {"membership": "join"}
    got = await remote.send(writer, room_id, RCAROL, "m.room.member", join, RCAROL)
    assert got.accepted
    assert has_valid_signature(stored(db, got.event_id).pdu, "10", _policy())
    assert current_state(db, room_id)[("m.room.member", RCAROL)] == got.event_id
    ps.mode = "down"
    got = await remote.send(writer, room_id, RDAVE, "m.room.member", join, RDAVE)
    assert got.soft_failed
    assert ("m.room.member", RDAVE) not in current_state(db, room_id)


async def test_received_events_in_rooms_without_a_policy_server_need_none(
    writer: RoomWriter, remote: RemoteServer, signing: PolicySigning
) -> None:
    room_id = await _room(writer, remote, {"via": REMOTE})
    got = await writer.receive_pdu(
        await _remote_message(writer, remote, room_id, None), "10", remote.keys
    )
    assert got.accepted


async def test_the_pipeline_has_an_unsigned_event_signed(
    writer: RoomWriter,
    remote: RemoteServer,
    ps: FakePolicyServer,
    signing: PolicySigning,
    db: Database,
) -> None:
    """server-server-api.md "Validating Policy Server signatures": a missing or invalid
    signature is asked for again before the event is soft-failed."""
    room_id = await _room(writer, remote)
    keyring = FakeKeyring(remote.keys_with(writer))
    pipeline = PduPipeline(writer, keyring, ps)  # type: ignore[arg-type]
    unsigned = await _remote_message(writer, remote, room_id, None)
    got = await pipeline.process(REMOTE, room_id, unsigned, "10")
    assert got is not None
    assert got.accepted
    assert [p for _, p, _ in ps.asked] == [SIGN_PATH]
    assert has_valid_signature(stored(db, got.event_id).pdu, "10", _policy())
    # a validly signed one is not asked about again
    ps.asked.clear()
    signed = await _remote_message(writer, remote, room_id, POLICY_KEY)
    assert (await pipeline.process(REMOTE, room_id, signed, "10")).accepted  # type: ignore[union-attr]
    assert ps.asked == []
    # refused, down, or a forged answer: soft-failed
    for mode in ("refuse", "down", "forge"):
        ps.mode = mode
        forged = await _remote_message(writer, remote, room_id, FORGER_KEY)
        got = await pipeline.process(REMOTE, room_id, forged, "10")
        assert got is not None
        assert got.soft_failed, mode
