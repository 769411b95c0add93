"""Interop with a real Synapse: server keys (server-server-api.md "Retrieving server keys").

Synapse, asked as a notary for pocketserver's keys, fetches them from pocketserver over
TLS (IP-literal server name, certificate checked against the test CA), checks that
pocketserver signed them with the key it publishes and that the answer names the
right server, and hands them back countersigned. Any fault in our key document or our
TLS listener makes Synapse answer without them.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from nacl.signing import VerifyKey

from pocketserver.core.crypto import decode_base64, encode_canonical_json
from tests.federation.conftest import federation_url
from tests.federation.synapse_peer import SynapsePeer, trusting
from tests.harness import RunningServer


def _own_keys(pocket: RunningServer, ca: Path) -> dict[str, object]:
    with httpx.Client(base_url=federation_url(pocket), verify=trusting(ca), timeout=30) as c:
        r = c.get("/_matrix/key/v2/server")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _verify(doc: dict[str, object], server: str, key_id: str, key_b64: str) -> None:
    unsigned = {k: v for k, v in doc.items() if k not in ("signatures", "unsigned")}
    sigs = doc["signatures"]
    assert isinstance(sigs, dict)
    sig = sigs[server][key_id]
    VerifyKey(decode_base64(key_b64)).verify(encode_canonical_json(unsigned), decode_base64(sig))


def test_synapse_notary_fetches_and_verifies_our_keys(
    synapse: SynapsePeer, pocket_tls: RunningServer
) -> None:
    ours = _own_keys(pocket_tls, synapse.ca_path)
    assert ours["server_name"] == pocket_tls.server_name
    verify_keys = ours["verify_keys"]
    assert isinstance(verify_keys, dict)
    assert verify_keys
    with synapse.client() as c:
        r = c.post(
            "/_matrix/key/v2/query",
            # Synapse fetches on a cache miss only for named key IDs.
            json={
                "server_keys": {
                    pocket_tls.server_name: {k: {"minimum_valid_until_ts": 0} for k in verify_keys}
                }
            },
        )
    assert r.status_code == 200, r.text
    answers = r.json()["server_keys"]
    assert len(answers) == 1, (answers, synapse.log_text()[-3000:])
    doc = answers[0]
    assert doc["server_name"] == pocket_tls.server_name
    assert doc["verify_keys"] == verify_keys
    assert doc["valid_until_ts"] > time.time() * 1000
    # Our self-signature survived the trip, and Synapse countersigned as notary.
    for key_id, key in verify_keys.items():
        _verify(doc, pocket_tls.server_name, key_id, key["key"])
    synapse_keys = _own_keys_of_synapse(synapse)
    for key_id, key in synapse_keys.items():
        _verify(doc, synapse.server_name, key_id, key)


def test_synapse_does_not_vouch_for_a_server_it_cannot_reach(synapse: SynapsePeer) -> None:
    """The negative side: a name on a port nobody listens on yields no keys (so the
    previous test's success does mean Synapse reached pocketserver)."""
    from tests.federation.synapse_peer import free_port

    nobody = f"127.0.0.2:{free_port('127.0.0.2')}"
    with synapse.client() as c:
        r = c.post(
            "/_matrix/key/v2/query",
            json={"server_keys": {nobody: {"ed25519:a_xyz": {"minimum_valid_until_ts": 0}}}},
        )
    assert r.status_code == 200, r.text
    assert r.json()["server_keys"] == []


def _own_keys_of_synapse(synapse: SynapsePeer) -> dict[str, str]:
    with synapse.client() as c:
        doc = c.get("/_matrix/key/v2/server").json()
    return {k: v["key"] for k, v in doc["verify_keys"].items()}
