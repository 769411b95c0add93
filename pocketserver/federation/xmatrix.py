"""The ``Authorization: X-Matrix`` header of server-server requests.

Spec: server-server-api.md "Request Authentication". The signed object is
``{method, uri, origin, destination, content?}``: ``uri`` is the raw request target
(path and query string, as sent), ``content`` the JSON body when there is one. Pure:
building and parsing the header, and the object to check; the keyring checks it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import nacl.signing

from pocketserver.core.crypto import encode_base64, encode_canonical_json, key_id
from pocketserver.core.identifiers import is_valid_server_name

SCHEME = "X-Matrix"

# RFC 9110 token characters, plus ":" (the spec: recipients "should allow colons to be
# included in values without requiring the value to be enclosed in quotes"), and "[" "]"
# for IPv6 literals in server names, which old senders did not quote either.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z:\[\]/=]+"
_PARAM = re.compile(
    rf'[ \t]*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)[ \t]*=[ \t]*(?:"((?:[^"\\]|\\.)*)"|({_TOKEN}))[ \t]*'
)
_UNESCAPE = re.compile(r"\\(.)")


class AuthHeaderError(ValueError):
    """Authentication refused: no header, or not meant for us (401)."""


class MalformedAuthHeader(AuthHeaderError):
    """An ``X-Matrix`` header that cannot be read (400, as Synapse)."""


@dataclass(frozen=True, slots=True)
class XMatrixAuth:
    """One parsed ``X-Matrix`` header."""

    origin: str
    key: str
    sig: str
    destination: str | None


def signed_request_object(
    method: str, uri: str, origin: str, destination: str, content: object | None
) -> dict[str, object]:
    """The JSON object a request's signature covers (without ``signatures``)."""
    obj: dict[str, object] = {
        "method": method,
        "uri": uri,
        "origin": origin,
        "destination": destination,
    }
    if content is not None:
        obj["content"] = content
    return obj


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization_header(
    origin: str,
    destination: str,
    signing_key: nacl.signing.SigningKey,
    method: str,
    uri: str,
    content: object | None = None,
) -> str:
    """The ``Authorization`` value for an outbound request.

    As the spec asks of senders: one space after ``X-Matrix``, lower-case names, no
    whitespace around commas, ``destination`` always sent; values quoted. ``sig`` is
    the parameter name Synapse reads (the spec's prose calls it ``signature``).

    Args:
        origin: This server's name.
        destination: The receiving server's name (before any delegation).
        signing_key: This server's signing key (with ``alg``/``version``).
        method: The HTTP method, upper case.
        uri: The request target exactly as sent: path and ``?query``.
        content: The JSON body, or None when the request has none.
    """
    obj = signed_request_object(method, uri, origin, destination, content)
    signature = encode_base64(signing_key.sign(encode_canonical_json(obj)).signature)
    params = (
        ("origin", origin),
        ("destination", destination),
        ("key", key_id(signing_key)),
        ("sig", signature),
    )
    return SCHEME + " " + ",".join(f"{name}={_quote(value)}" for name, value in params)


def parse_authorization(value: str) -> XMatrixAuth | None:
    """Read one ``Authorization`` header; None if its scheme is not ``X-Matrix``.

    RFC 9110 auth-params: names case-insensitive, values a token or a quoted string
    with backslash escapes, spaces and tabs around commas; unknown names ignored.

    Raises:
        MalformedAuthHeader: an ``X-Matrix`` header that is malformed, lacks
            ``origin``, ``key`` or ``sig``, or whose origin is not a server name.
    """
    scheme, sep, rest = value.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        return None
    if not sep:
        raise MalformedAuthHeader("X-Matrix header without parameters")
    params: dict[str, str] = {}
    for part in _split_params(rest):
        m = _PARAM.fullmatch(part)
        if m is None:
            raise MalformedAuthHeader("malformed X-Matrix parameter")
        name = m.group(1).lower()
        raw = m.group(2)
        params.setdefault(name, _UNESCAPE.sub(r"\1", raw) if raw is not None else m.group(3))
    sig = params.get("sig", params.get("signature"))
    origin, key = params.get("origin"), params.get("key")
    if not origin or not key or not sig:
        raise MalformedAuthHeader("X-Matrix header needs origin, key and sig")
    if not is_valid_server_name(origin):
        raise MalformedAuthHeader("X-Matrix origin is not a server name")
    return XMatrixAuth(origin, key, sig, params.get("destination"))


def _split_params(text: str) -> Iterable[str]:
    """Split on commas outside quoted strings."""
    part: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            yield "".join(part)
            part = []
            continue
        part.append(ch)
    if quoted:
        raise MalformedAuthHeader("unterminated quoted string in X-Matrix header")
    yield "".join(part)


def request_to_check(
    headers: Iterable[XMatrixAuth],
    method: str,
    uri: str,
    our_name: str,
    content: object | None,
) -> tuple[str, dict[str, object]]:
    """The signed object an inbound request claims, with every header's signature.

    A header's ``destination`` must be ours (spec: "the receiving server must deny the
    request with an HTTP status code 401"); without one, the object is checked with
    our name as destination, so the signature must still have been made for us (as
    Synapse does; the spec asks recipients to accept headers without it).

    Returns:
        The origin and the object to verify against its keys.

    Raises:
        AuthHeaderError: no header, or a destination other than ``our_name``.
        MalformedAuthHeader: headers naming different origins.
    """
    auths = list(headers)
    if not auths:
        raise AuthHeaderError("missing X-Matrix Authorization header")
    origins = {a.origin for a in auths}
    if len(origins) != 1:
        raise MalformedAuthHeader("X-Matrix headers name different origins")
    for auth in auths:
        if auth.destination is not None and auth.destination != our_name:
            raise AuthHeaderError(f"request is for {auth.destination}, not for this server")
    origin = auths[0].origin
    obj = signed_request_object(method, uri, origin, our_name, content)
    sigs: dict[str, str] = {a.key: a.sig for a in auths}
    obj["signatures"] = {origin: sigs}
    return origin, obj
