"""Checks on account data a client sends: sizes, server-managed types, tags and the
ignored user list. Values in, errors out; no I/O.

Spec: client-server-api modules/account_data.md ("Server Behaviour"), tags.md,
ignore_users.md; data/event-schemas/schema/m.ignored_user_list.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core.identifiers import is_valid_user_id
from pocketserver.errors import MatrixError, bad_json, invalid_param
from pocketserver.storage.account_data import encode

MAX_CONTENT_BYTES = 64 * 1024
"""One item's content, as compact JSON."""
MAX_TYPE_BYTES = 255
"""The spec's limit on event types applies to account data types too."""
MAX_TAG_BYTES = 255
"""tags.md: "The name of a tag MUST NOT exceed 255 bytes"."""

SERVER_MANAGED = frozenset({"m.fully_read", "m.push_rules"})
"""account_data.md: servers MUST reject setting these with a 405 (global and per room)."""

IGNORED_USER_LIST = "m.ignored_user_list"
TAG = "m.tag"
FULLY_READ = "m.fully_read"


def _byte_length(text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from the URL
        return MAX_TYPE_BYTES + 1


def check_type(type_: str) -> None:
    """Raises: MatrixError 400 ``M_INVALID_PARAM`` for an empty or too long type."""
    if not type_ or _byte_length(type_) > MAX_TYPE_BYTES:
        raise invalid_param(f"account data type must be 1 to {MAX_TYPE_BYTES} bytes")


def check_client_may_set(type_: str) -> None:
    """Raises: MatrixError 405 ``M_BAD_JSON`` for a type the server manages."""
    if type_ in SERVER_MANAGED:
        raise MatrixError(405, "M_BAD_JSON", f"cannot set {type_} through this API")


def check_size(content: Mapping[str, object]) -> None:
    """Raises: MatrixError 413 ``M_TOO_LARGE`` past :data:`MAX_CONTENT_BYTES`."""
    if len(encode(dict(content)).encode("utf-8")) > MAX_CONTENT_BYTES:
        raise MatrixError(
            413, "M_TOO_LARGE", f"account data content is larger than {MAX_CONTENT_BYTES} bytes"
        )


def check_ignored_user_list(user_id: str, content: Mapping[str, object]) -> None:
    """The content of ``m.ignored_user_list``: ``ignored_users`` maps user IDs to objects.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for a wrong shape, ``M_INVALID_PARAM`` for
            something that is not a user ID or for ignoring oneself.
    """
    ignored = content.get("ignored_users")
    if not isinstance(ignored, dict):
        raise bad_json("ignored_users must be an object mapping user IDs to objects")
    for other, value in ignored.items():
        if not is_valid_user_id(other):
            raise invalid_param(f"not a user ID: {other!r}")
        if other == user_id:
            raise invalid_param("you cannot ignore yourself")
        if not isinstance(value, dict):
            raise bad_json("each ignored user must map to an object")


def ignored_set(content: Mapping[str, object] | None) -> frozenset[str]:
    """The user IDs an ``m.ignored_user_list`` content names (stored content is trusted
    to have been checked, but a wrong shape still yields an empty set)."""
    ignored = content.get("ignored_users") if content else None
    if not isinstance(ignored, dict):
        return frozenset()
    return frozenset(k for k in ignored if isinstance(k, str))


def check_tag(tag: str, body: Mapping[str, object]) -> dict[str, object]:
    """A tag's name and its body (``order`` a number in [0, 1]); returns the body to store.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for a bad name or an order outside [0, 1],
            ``M_BAD_JSON`` for an order that is not a number.
    """
    if not tag or _byte_length(tag) > MAX_TAG_BYTES:
        raise invalid_param(f"tag names must be 1 to {MAX_TAG_BYTES} bytes")
    order = body.get("order")
    if order is not None:
        if isinstance(order, bool) or not isinstance(order, int | float):
            raise bad_json("order must be a number")
        if not 0 <= order <= 1:
            raise invalid_param("order must be between 0 and 1")
    return {k: v for k, v in body.items() if not (k == "order" and v is None)}
