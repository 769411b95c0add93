"""Tests for pocketserver.core.events: event IDs, v12 room IDs and PDU validation.

Spec: rooms/v*.md "Event format" / "Event IDs"; server-server-api.md PDU schemas
(pdu_v1/v3/v4/v6/v11/v12.yaml); client-server-api "Size limits";
fragments/v6-canonical-json.md.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pocketserver.core import crypto
from pocketserver.core.events import (
    EventFormatError,
    auth_event_ids,
    compute_event_id,
    compute_room_id_v12,
    prev_event_ids,
    validate_pdu,
)

ALL_VERSIONS = [str(n) for n in range(1, 13)]
H_STD = "T0nksu94phapP7sQX3gwTU3ZlHODMc/LXDoC8b8yyQ4"
H_URL = "T0nksu94phapP7sQX3gwTU3ZlHODMc_LXDoC8b8yyQ4"
V12_ROOM = "!XzvIvnE0p3-GW68APz8W--QW1QAMj7oe8UmNNDFNfOw"


def _event_ref(version: str, n: int) -> object:
    """A prev/auth entry in the version's shape."""
    if version in ("1", "2"):
        return [f"$e{n}:example.org", {"sha256": "abc"}]
    return "$" + (H_STD if version == "3" else H_URL)[:-1] + "ABCDEFGHIJ"[n]


def make_pdu(version: str, **overrides: object) -> dict:
    pdu: dict = {
        "type": "m.room.message",
        "sender": "@alice:example.org",
        "room_id": V12_ROOM if version == "12" else "!room:example.org",
        "origin_server_ts": 1000,
        "depth": 3,
        "content": {"body": "hi", "msgtype": "m.text"},
        "hashes": {"sha256": "x" * 43},
        "signatures": {"example.org": {"ed25519:1": "sig"}},
        "unsigned": {"age": 1},
        "prev_events": [_event_ref(version, 0)],
        "auth_events": [_event_ref(version, 1), _event_ref(version, 2)],
    }
    if version in ("1", "2"):
        pdu["event_id"] = "$ev:example.org"
        pdu["origin"] = "example.org"
    pdu.update(overrides)
    return {k: v for k, v in pdu.items() if v is not _DROP}


_DROP = object()

V12_CREATE = {
    "type": "m.room.create",
    "content": {"room_version": "12"},
    "sender": "@a:b.org",
    "origin_server_ts": 1,
    "depth": 1,
    "prev_events": [],
    "auth_events": [],
    "hashes": {"sha256": "x"},
    "signatures": {},
    "state_key": "",
}


# --- event IDs ------------------------------------------------------------------------


def test_event_id_v1_v2_is_carried() -> None:
    for version in ("1", "2"):
        assert compute_event_id(make_pdu(version), version) == "$ev:example.org"
        with pytest.raises(EventFormatError, match="event_id"):
            compute_event_id(make_pdu(version, event_id=_DROP), version)
        with pytest.raises(EventFormatError, match="event_id"):
            compute_event_id(make_pdu(version, event_id=5), version)


# Fixed vectors, cross-checked against Synapse 1.163 (make_event_from_dict(...).event_id).
VECTOR_EVENT = {**V12_CREATE, "room_id": "!abc:b.org", "type": "m.room.message"}


@pytest.mark.parametrize(
    ("event", "version", "event_id"),
    [
        (VECTOR_EVENT, "3", "$" + H_STD),
        (VECTOR_EVENT, "4", "$" + H_URL),
        (VECTOR_EVENT, "10", "$" + H_URL),
        (V12_CREATE, "12", "$" + V12_ROOM[1:]),
    ],
)
def test_event_id_vectors(event: dict, version: str, event_id: str) -> None:
    assert compute_event_id(event, version) == event_id


def _independent_ref_hash(redacted: dict) -> str:
    body = {k: v for k, v in redacted.items() if k not in ("signatures", "unsigned")}
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return crypto.encode_base64(hashlib.sha256(data.encode()).digest())


def test_event_id_from_spec_steps() -> None:
    event = make_pdu("5", origin="example.org", custom="dropped")
    # rooms v5 redaction (v1-redactions.md): message content is emptied, top-level
    # keys off the list are dropped, origin is kept.
    redacted = {k: v for k, v in event.items() if k not in ("custom", "unsigned")}
    redacted["content"] = {}
    expected = "$" + _independent_ref_hash(redacted).replace("+", "-").replace("/", "_")
    assert compute_event_id(event, "5") == expected


@pytest.mark.parametrize("version", [str(n) for n in range(3, 13)])
def test_event_id_ignores_non_essential_keys(version: str) -> None:
    event = make_pdu(version)
    eid = compute_event_id(event, version)
    assert eid.startswith("$")
    assert len(eid) == 44
    same = {**event, "unsigned": {"age": 99}, "signatures": {}, "content": {"body": "edited"}}
    assert compute_event_id(same, version) == eid
    assert compute_event_id({**event, "hashes": {"sha256": "y" * 43}}, version) != eid
    assert compute_event_id({**event, "depth": 4}, version) != eid


def test_v3_and_v4_alphabets() -> None:
    assert "/" in compute_event_id(VECTOR_EVENT, "3")
    v4 = compute_event_id(VECTOR_EVENT, "4")
    assert "/" not in v4
    assert "+" not in v4
    assert "_" in v4


def test_event_id_unknown_version() -> None:
    with pytest.raises(ValueError, match="unknown room version"):
        compute_event_id(VECTOR_EVENT, "13")


def test_event_id_not_json() -> None:
    with pytest.raises(EventFormatError, match="canonical JSON"):
        compute_event_id({**VECTOR_EVENT, "depth": {1, 2}}, "10")


def test_room_id_v12() -> None:
    assert compute_room_id_v12(V12_CREATE) == V12_ROOM
    # The unsigned/signatures of the create event don't change the room ID.
    other = {**V12_CREATE, "unsigned": {"age": 5}, "signatures": {"b.org": {"ed25519:1": "s"}}}
    assert compute_room_id_v12(other) == V12_ROOM
    # v11 redaction keeps all of the create event's content: it is covered.
    assert compute_room_id_v12({**V12_CREATE, "content": {"room_version": "12", "x": 1}}) != (
        V12_ROOM
    )
    with pytest.raises(EventFormatError, match=r"m\.room\.create"):
        compute_room_id_v12({**V12_CREATE, "type": "m.room.message"})


def test_edge_id_helpers() -> None:
    assert prev_event_ids(make_pdu("1"), "1") == ["$e0:example.org"]
    assert auth_event_ids(make_pdu("2"), "2") == ["$e1:example.org", "$e2:example.org"]
    pdu = make_pdu("9")
    assert prev_event_ids(pdu, "9") == pdu["prev_events"]
    assert auth_event_ids(pdu, "9") == pdu["auth_events"]
    with pytest.raises(EventFormatError, match="pairs"):
        prev_event_ids(make_pdu("9"), "1")
    with pytest.raises(EventFormatError, match="array"):
        auth_event_ids(make_pdu("9", auth_events=_DROP), "9")


# --- validate_pdu -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_valid_pdus(version: str) -> None:
    validate_pdu(make_pdu(version), version)
    validate_pdu(make_pdu(version, state_key="", type="m.room.name"), version)
    validate_pdu(make_pdu(version, prev_events=[], auth_events=[], depth=0), version)
    validate_pdu(make_pdu(version, unsigned=_DROP, redacts=_DROP), version)


def test_valid_v12_create() -> None:
    validate_pdu(V12_CREATE, "12")
    pdu = crypto.add_hashes_and_signatures(
        V12_CREATE, "12", "b.org", crypto.generate_signing_key("k")
    )
    validate_pdu(pdu, "12")


Mutation = Callable[[str], dict]
OLD = ALL_VERSIONS[:5]  # v1-v5: no strict canonical JSON
NEW = ALL_VERSIONS[5:]  # v6+

# (id, PDU for a version, versions in which it must be rejected, error text)
INVALID: list[tuple[str, Mutation, list[str], str]] = [
    *[
        (f"missing-{key}", lambda v, k=key: make_pdu(v, **{k: _DROP}), ALL_VERSIONS, key)
        for key in (
            "sender",
            "type",
            "content",
            "hashes",
            "signatures",
            "origin_server_ts",
            "depth",
            "prev_events",
            "auth_events",
            "room_id",
        )
    ],
    ("missing-event_id", lambda v: make_pdu(v, event_id=_DROP), ["1", "2"], "event_id"),
    ("sender-int", lambda v: make_pdu(v, sender=5), ALL_VERSIONS, "sender"),
    ("type-null", lambda v: make_pdu(v, type=None), ALL_VERSIONS, "type"),
    ("content-list", lambda v: make_pdu(v, content=[]), ALL_VERSIONS, "content"),
    ("hashes-no-sha256", lambda v: make_pdu(v, hashes={}), ALL_VERSIONS, "sha256"),
    ("hashes-sha256-int", lambda v: make_pdu(v, hashes={"sha256": 1}), ALL_VERSIONS, "sha256"),
    ("signatures-str", lambda v: make_pdu(v, signatures="x"), ALL_VERSIONS, "signatures"),
    (
        "signatures-inner",
        lambda v: make_pdu(v, signatures={"a.org": {"ed25519:1": 5}}),
        ALL_VERSIONS,
        "signatures",
    ),
    ("ts-str", lambda v: make_pdu(v, origin_server_ts="1"), ALL_VERSIONS, "origin_server_ts"),
    ("ts-bool", lambda v: make_pdu(v, origin_server_ts=True), ALL_VERSIONS, "origin_server_ts"),
    ("depth-str", lambda v: make_pdu(v, depth="3"), ALL_VERSIONS, "depth"),
    ("depth-negative", lambda v: make_pdu(v, depth=-1), ALL_VERSIONS, "depth"),
    ("depth-2^53", lambda v: make_pdu(v, depth=2**53), NEW, "(depth|integer)"),
    ("depth-2^63", lambda v: make_pdu(v, depth=2**63), ALL_VERSIONS, "(depth|integer)"),
    ("state_key-int", lambda v: make_pdu(v, state_key=1), ALL_VERSIONS, "state_key"),
    ("unsigned-list", lambda v: make_pdu(v, unsigned=[]), ALL_VERSIONS, "unsigned"),
    ("redacts-int", lambda v: make_pdu(v, redacts=1), ALL_VERSIONS[:10], "redacts"),
    ("float", lambda v: make_pdu(v, content={"x": 1.5}), NEW, "float"),
    ("big-int", lambda v: make_pdu(v, content={"x": [2**53]}), NEW, "range"),
    ("small-int", lambda v: make_pdu(v, content={"x": {"y": -(2**53)}}), NEW, "range"),
    (
        "too-big",
        lambda v: make_pdu(v, content={"body": "x" * 65536}),
        ALL_VERSIONS,
        "65536",
    ),
    ("not-json", lambda v: make_pdu(v, content={"x": {1, 2}}), ALL_VERSIONS, "JSON"),
    ("bad-sender", lambda v: make_pdu(v, sender="alice"), ALL_VERSIONS, "sender"),
    ("sender-no-domain", lambda v: make_pdu(v, sender="@alice"), ALL_VERSIONS, "sender"),
    ("room_id-bad", lambda v: make_pdu(v, room_id="room"), ALL_VERSIONS, "room_id"),
    (
        "room_id-domain-in-v12",
        lambda v: make_pdu(v, room_id="!room:example.org"),
        ["12"],
        "room_id",
    ),
    (
        "room_id-hash-before-v12",
        lambda v: make_pdu(v, room_id=V12_ROOM),
        ALL_VERSIONS[:11],
        "room_id",
    ),
    ("event_id-bad", lambda v: make_pdu(v, event_id="ev"), ["1", "2"], "event_id"),
    (
        "prev-not-list",
        lambda v: make_pdu(v, prev_events={"a": 1}),
        ALL_VERSIONS,
        "prev_events",
    ),
    (
        "prev-ids-in-v1",
        lambda v: make_pdu(v, prev_events=["$e:example.org"]),
        ["1", "2"],
        "pairs",
    ),
    (
        "prev-pairs-in-v3+",
        lambda v: make_pdu(v, prev_events=[["$" + H_URL, {"sha256": "x"}]]),
        ALL_VERSIONS[2:],
        "prev_events",
    ),
    (
        "auth-pair-too-long",
        lambda v: make_pdu(v, auth_events=[["$e:example.org", {}, 1]]),
        ALL_VERSIONS,
        "auth_events",
    ),
    (
        "auth-pair-hash-not-object",
        lambda v: make_pdu(v, auth_events=[["$e:example.org", "x"]]),
        ALL_VERSIONS,
        "auth_events",
    ),
    ("auth-int", lambda v: make_pdu(v, auth_events=[1]), ALL_VERSIONS, "auth_events"),
    (
        "v3-id-in-v4",
        lambda v: make_pdu(v, prev_events=["$" + H_STD]),
        ALL_VERSIONS[3:],
        "prev_events",
    ),
    (
        "21-prev",
        lambda v: make_pdu(v, prev_events=[_event_ref(v, 0)] * 21),
        ALL_VERSIONS,
        "20",
    ),
    (
        "11-auth",
        lambda v: make_pdu(v, auth_events=[_event_ref(v, 0)] * 11),
        ALL_VERSIONS,
        "10",
    ),
    ("type-256-bytes", lambda v: make_pdu(v, type="t" * 256), ALL_VERSIONS, "type"),
    ("state_key-256", lambda v: make_pdu(v, state_key="s" * 256), ALL_VERSIONS, "state_key"),
    (
        "v12-create-in-auth",
        lambda v: make_pdu(v, auth_events=["$" + V12_ROOM[1:]]),
        ["12"],
        r"m\.room\.create",
    ),
    (
        "v12-create-with-room_id",
        lambda v: {**V12_CREATE, "room_id": V12_ROOM},
        ["12"],
        "room_id",
    ),
]


# Cases whose PDU is invalid for other reasons outside the listed versions:
# only the listed versions are checked.
ONLY_LISTED = {
    "prev-ids-in-v1",
    "prev-pairs-in-v3+",
    "v3-id-in-v4",
    "v12-create-in-auth",
    "v12-create-with-room_id",
}


def _invalid_cases():
    for case_id, mutate, versions, match in INVALID:
        for version in ALL_VERSIONS:
            if case_id in ONLY_LISTED and version not in versions:
                continue
            yield pytest.param(
                mutate, version, version in versions, match, id=f"{case_id}-v{version}"
            )


@pytest.mark.parametrize(("mutate", "version", "invalid", "match"), list(_invalid_cases()))
def test_invalid_pdus(mutate: Mutation, version: str, invalid: bool, match: str) -> None:
    pdu = mutate(version)
    before = copy.deepcopy(pdu) if match != "JSON" else None
    if invalid:
        with pytest.raises(EventFormatError, match=match):
            validate_pdu(pdu, version)
    else:
        validate_pdu(pdu, version)
    if before is not None:
        assert pdu == before


def test_old_versions_accept_non_canonical_numbers() -> None:
    # v1-canonical-json.md: servers MUST NOT strictly enforce canonical JSON.
    for version in OLD:
        validate_pdu(make_pdu(version, content={"x": 1.5, "y": 2**60}), version)


def test_v12_create_may_be_in_auth_of_other_rooms_only_by_id() -> None:
    # An auth event ID that is not this room's create event is fine.
    validate_pdu(make_pdu("12", auth_events=["$" + H_URL]), "12")


def test_byte_limits_and_synapse_leniency() -> None:
    wide = "\u00e9" * 128  # 128 code points, 256 bytes
    for version in ALL_VERSIONS:
        with pytest.raises(EventFormatError, match="state_key") as info:
            validate_pdu(make_pdu(version, state_key=wide), version)
        # Synapse stores these as rejected in v1-v10 (they once passed its code-point check).
        assert info.value.persist_as_rejected is (int(version) <= 10)
        with pytest.raises(EventFormatError) as info:
            validate_pdu(make_pdu(version, state_key="s" * 256), version)
        assert info.value.persist_as_rejected is False
    validate_pdu(make_pdu("11", state_key="\u00e9" * 127), "11")  # 254 bytes


def test_size_limit_is_inclusive() -> None:
    pdu = make_pdu("11")
    pad = 65536 - len(crypto.encode_canonical_json(pdu))
    pdu["content"] = {**pdu["content"], "pad": ""}
    pad -= len(crypto.encode_canonical_json(pdu)) - len(
        crypto.encode_canonical_json(make_pdu("11"))
    )
    pdu["content"]["pad"] = "p" * pad
    assert len(crypto.encode_canonical_json(pdu)) == 65536
    validate_pdu(pdu, "11")
    pdu["content"]["pad"] += "p"
    with pytest.raises(EventFormatError, match="65536"):
        validate_pdu(pdu, "11")


def test_edge_limits_can_be_relaxed_for_backfill() -> None:
    pdu = make_pdu("10", prev_events=[_event_ref("10", 0)] * 30)
    with pytest.raises(EventFormatError):
        validate_pdu(pdu, "10")
    validate_pdu(pdu, "10", enforce_edge_limits=False)


def test_deep_nesting_does_not_crash() -> None:
    nested: object = 1
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(EventFormatError):
        validate_pdu(make_pdu("11", content={"x": nested}), "11")


def test_non_mapping_and_unknown_version() -> None:
    with pytest.raises(EventFormatError, match="object"):
        validate_pdu([], "11")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown room version"):
        validate_pdu(make_pdu("11"), "bogus")


# --- cross-check with Synapse ----------------------------------------------------------

HAVE_SYNAPSE = importlib.util.find_spec("synapse") is not None


@pytest.mark.skipif(not HAVE_SYNAPSE, reason="matrix-synapse not installed")
@settings(max_examples=100, deadline=None)
@given(
    version=st.sampled_from([str(n) for n in range(3, 13)]),
    event_type=st.sampled_from(["m.room.message", "m.room.member", "m.room.create", "x.y"]),
    content=st.dictionaries(
        st.sampled_from(["membership", "body", "creator", "room_version", "redacts"]),
        st.text(max_size=5),
        max_size=3,
    ),
    ts=st.integers(0, 2**40),
    state_key=st.one_of(st.none(), st.just(""), st.text(max_size=4)),
)
def test_event_ids_match_synapse(
    version: str, event_type: str, content: dict, ts: int, state_key: str | None
) -> None:
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS as SYN_VERSIONS
    from synapse.events import make_event_from_dict

    pdu = make_pdu(version, type=event_type, content=content, origin_server_ts=ts)
    if state_key is not None:
        pdu["state_key"] = state_key
    is_v12_create = version == "12" and event_type == "m.room.create" and state_key == ""
    if is_v12_create:
        del pdu["room_id"]
    theirs = make_event_from_dict(copy.deepcopy(pdu), SYN_VERSIONS[version])
    assert compute_event_id(pdu, version) == theirs.event_id
    if is_v12_create:
        assert compute_room_id_v12(pdu) == theirs.room_id


def test_joined_user_only_for_joins() -> None:
    from pocketserver.core.events import joined_user

    join = {"type": "m.room.member", "state_key": "@a:x", "content": {"membership": "join"}}
    assert joined_user(join) == "@a:x"
    assert joined_user({**join, "content": {"membership": "leave"}}) is None
    assert joined_user({**join, "content": "join"}) is None
    assert joined_user({**join, "state_key": None}) is None
    assert joined_user({**join, "type": "m.room.name"}) is None
