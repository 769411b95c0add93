"""Running a matrix-js-sdk scenario script (tests/js/*.mjs) and checking what it uploaded.

A scenario prints "ok <step>" per step and, last, "result <JSON>"; see
tests/js/crypto_harness.mjs.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import nacl.exceptions
import nacl.signing
from canonicaljson import encode_canonical_json

from tests.e2e.test_js_sdk import JS


def run_scenario(script: str, scenario: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``tests/js/<script>`` with ``scenario``; assert it passed; its result line.

    Returns ``{"stdout": ..., "result": {...}}``.
    """
    proc = subprocess.run(
        ["node", str(JS / script), json.dumps(scenario)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for line in proc.stdout.splitlines():
        if line.startswith("result "):
            return {"stdout": proc.stdout, "result": json.loads(line.removeprefix("result "))}
    raise AssertionError(f"no result line in {output}")


def b64decode(s: str) -> bytes:
    """Unpadded base64 (appendix "Unpadded Base64")."""
    return base64.b64decode(s + "=" * (-len(s) % 4))


def verify_signature(obj: dict[str, Any], user_id: str, key_id: str, public_key: str) -> None:
    """Check ``obj``'s signature by ``user_id``'s ``key_id`` (appendix "Signing JSON")."""
    signature = obj["signatures"][user_id][key_id]
    unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    try:
        nacl.signing.VerifyKey(b64decode(public_key)).verify(
            encode_canonical_json(unsigned), b64decode(signature)
        )
    except nacl.exceptions.BadSignatureError:
        raise AssertionError(f"bad signature by {key_id} on {obj}") from None
