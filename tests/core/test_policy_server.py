"""Policy server rules (core/policy_server.py): the m.room.policy content, exempt
events, and the signature over the redacted event under ``ed25519:policy_server``."""

from __future__ import annotations

from typing import Any

import pytest

from pocketserver.core.crypto import (
    add_hashes_and_signatures,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
    sign_json,
)
from pocketserver.core.policy_server import (
    POLICY_KEY_ID,
    add_policy_signature,
    has_valid_signature,
    is_exempt,
    needs_signature,
    policy_from_content,
    via_is_joined,
)
from pocketserver.core.redaction import redact

PS = "policy.test"
ME = "local.test"
POLICY_KEY = generate_signing_key("policy_server")
SERVER_KEY = generate_signing_key("a_1")
OTHER_KEY = generate_signing_key("policy_server")
PUBLIC = encode_verify_key_base64(get_verify_key(POLICY_KEY))


def _content(**overrides: Any) -> dict[str, Any]:
    return {"via": PS, "public_keys": {"ed25519": PUBLIC}, **overrides}


def _event(body: str = "hi", etype: str = "m.room.message", **extra: Any) -> dict[str, Any]:
    pdu = {
        "type": etype,
        "room_id": "!r:local.test",
        "sender": "@alice:local.test",
        "content": {"msgtype": "m.text", "body": body},
        "origin_server_ts": 1,
        "depth": 3,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        **extra,
    }
    return add_hashes_and_signatures(pdu, "10", ME, SERVER_KEY)


def _policy_answer(pdu: dict[str, Any], key: Any = POLICY_KEY, name: str = PS) -> dict[str, Any]:
    """What a policy server answers: its signature of the redacted event."""
    signed = sign_json(redact(pdu, "10"), name, key)
    return {name: signed["signatures"][name]}  # type: ignore[index]


def test_valid_content_names_the_policy_server() -> None:
    policy = policy_from_content(_content(), ME)
    assert policy is not None
    assert policy.server_name == PS
    assert bytes(policy.verify_key) == bytes(get_verify_key(POLICY_KEY))
    # the spec's example key is URL-safe base64
    url_safe = "6yhHGKhCiXTSEN2ksjV7kX_N6rBQZ3Xb-M7LlC6NS-s"
    assert policy_from_content(_content(public_keys={"ed25519": url_safe}), ME) is not None


@pytest.mark.parametrize(
    "content",
    [
        None,
        [],
        {},
        {"via": PS},
        {"public_keys": {"ed25519": PUBLIC}},
        _content(via=5),
        _content(via=""),
        _content(via="not a server"),
        _content(public_keys=PUBLIC),
        _content(public_keys={}),
        _content(public_keys={"ed25519": 7}),
        _content(public_keys={"ed25519": "!!notbase64"}),
        _content(public_keys={"ed25519": "AAAA"}),  # not 32 bytes
        _content(via=ME),  # this server is not a policy server (as Synapse)
    ],
)
def test_malformed_content_means_no_policy_server(content: Any) -> None:
    assert policy_from_content(content, ME) is None


def test_via_must_have_a_joined_user() -> None:
    join, leave = {"membership": "join"}, {"membership": "leave"}
    assert via_is_joined(PS, {"@ps:policy.test": join})
    assert via_is_joined(PS, {"@a:policy.test": leave, "@b:policy.test": join})
    assert not via_is_joined(PS, {"@ps:policy.test": leave})
    assert not via_is_joined(PS, {"@ps:policy.test": {"membership": "invite"}})
    assert not via_is_joined(PS, {"@ps:policy.test.evil": join, "@ps:other": join})
    assert not via_is_joined(PS, {"@ps:policy.test": "join"})
    assert not via_is_joined(PS, {})


def test_only_the_policy_state_event_is_exempt() -> None:
    assert is_exempt({"type": "m.room.policy", "state_key": ""})
    assert not is_exempt({"type": "m.room.policy", "state_key": "x"})
    assert not is_exempt({"type": "m.room.policy"})
    assert not is_exempt({"type": "m.room.member", "state_key": ""})
    assert not is_exempt({"type": "m.room.power_levels", "state_key": ""})


def test_signature_valid_invalid_missing() -> None:
    policy = policy_from_content(_content(), ME)
    assert policy is not None
    pdu = _event()
    assert not has_valid_signature(pdu, "10", policy)  # missing
    assert needs_signature(pdu, "10", policy)
    signed = add_policy_signature(pdu, policy, _policy_answer(pdu))
    assert has_valid_signature(signed, "10", policy)
    assert not needs_signature(signed, "10", policy)
    # the server's own signature is kept beside the policy server's
    assert ME in signed["signatures"]  # type: ignore[operator]
    # signed by another key (a forgery, or a rotated key the room does not name)
    forged = add_policy_signature(pdu, policy, _policy_answer(pdu, OTHER_KEY))
    assert not has_valid_signature(forged, "10", policy)
    # the signature covers the redacted event: changing a key redaction keeps breaks it
    tampered = {**signed, "origin_server_ts": 2}
    assert not has_valid_signature(tampered, "10", policy)
    # a signature by the policy server's published key (another key ID) is no answer
    with pytest.raises(ValueError, match="signature"):
        add_policy_signature(pdu, policy, _policy_answer(pdu, SERVER_KEY))


def test_no_policy_or_exempt_needs_nothing() -> None:
    policy = policy_from_content(_content(), ME)
    assert not needs_signature(_event(), "10", None)
    exempt = _event(etype="m.room.policy", state_key="")
    assert not needs_signature(exempt, "10", policy)
    not_exempt = _event(etype="m.room.policy", state_key="x")
    assert needs_signature(not_exempt, "10", policy)


@pytest.mark.parametrize(
    "answer",
    [
        {},
        [],
        "sig",
        {PS: "sig"},
        {PS: {}},
        {PS: {"ed25519:other": "AAAA"}},
        {PS: {POLICY_KEY_ID: 5}},
        {PS: {POLICY_KEY_ID: "!!"}},
        {"other.test": {POLICY_KEY_ID: "AAAA"}},
    ],
)
def test_malformed_answers_are_refused(answer: Any) -> None:
    policy = policy_from_content(_content(), ME)
    assert policy is not None
    with pytest.raises(ValueError, match=r"signature|base64"):
        add_policy_signature(_event(), policy, answer)


def test_existing_signatures_of_the_policy_servers_name_are_kept() -> None:
    """room_policy.yaml: the policy server may be the event's origin; its existing
    signatures are retained."""
    policy = policy_from_content(_content(), ME)
    assert policy is not None
    pdu = {**_event(), "signatures": {PS: {"ed25519:a_1": "kept"}}}
    signed = add_policy_signature(pdu, policy, _policy_answer(pdu))
    assert set(signed["signatures"][PS]) == {"ed25519:a_1", POLICY_KEY_ID}  # type: ignore[index]
