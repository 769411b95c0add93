"""Checking an ``m.room.canonical_alias`` a local client sends.

Spec: client-server-api "m.room.canonical_alias": "the server SHOULD validate that the
alias and alt_aliases point to the room (returning 400 M_BAD_ALIAS)"; the state
endpoint lists 400 ``M_BAD_ALIAS`` and ``M_INVALID_PARAM`` for this. As Synapse
(``EventCreationHandler._validate_canonical_alias``), only aliases that are new against
the current event are checked, so an alias deleted since does not block other changes,
and a room's aliases are read from this server's directory only: without federation, an
alias of another server cannot be confirmed and is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from pocketserver.core.identifiers import is_valid_room_alias
from pocketserver.errors import MatrixError
from pocketserver.storage import directory as directory_store
from pocketserver.storage.db import Database

CANONICAL_ALIAS = "m.room.canonical_alias"


def new_aliases(content: Mapping[str, object], previous: Mapping[str, object] | None) -> list[str]:
    """The aliases ``content`` adds against ``previous`` (pure; checks their shape).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for an alias that is not a string or not an
            alias, or ``alt_aliases`` that is not a list.
    """
    before = previous or {}
    added: list[str] = []
    alias = content.get("alias")
    if alias is not None and alias != before.get("alias"):
        if not isinstance(alias, str):
            raise MatrixError(400, "M_INVALID_PARAM", "alias must be a string")
        added.append(alias)
    alt = content.get("alt_aliases", [])
    if not isinstance(alt, list):
        raise MatrixError(400, "M_INVALID_PARAM", "alt_aliases must be a list")
    old_alt = before.get("alt_aliases")
    known = set(old_alt) if isinstance(old_alt, list) else set()
    for entry in alt:
        if not isinstance(entry, str):
            raise MatrixError(400, "M_INVALID_PARAM", "each alt_alias must be a string")
        if entry not in known and entry not in added:
            added.append(entry)
    for entry in added:
        # An empty "alias" is how clients clear it (Synapse skips falsy values too).
        if entry and not is_valid_room_alias(entry):
            raise MatrixError(400, "M_INVALID_PARAM", f"not a room alias: {entry!r}")
    return [a for a in added if a]


async def check_canonical_alias(
    db: Database,
    room_id: str,
    content: Mapping[str, object],
    previous: Mapping[str, object] | None,
) -> None:
    """Refuse an alias event naming aliases that don't point at ``room_id``.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` (see :func:`new_aliases`); 400
            ``M_BAD_ALIAS`` for an alias that is unknown or points at another room.
    """
    for alias in new_aliases(content, previous):
        found = await db.read(directory_store.get_alias, alias)
        if found is None or found[0] != room_id:
            raise MatrixError(400, "M_BAD_ALIAS", f"room alias {alias} does not point to the room")


def without_alias(content: Mapping[str, object], alias: str) -> dict[str, object] | None:
    """``content`` with ``alias`` taken out of ``alias`` and ``alt_aliases``; None when
    it names ``alias`` nowhere (pure)."""
    changed = dict(content)
    if changed.get("alias") == alias:
        del changed["alias"]
    alt = changed.get("alt_aliases")
    if isinstance(alt, list) and alias in alt:
        changed["alt_aliases"] = [a for a in alt if a != alias]
    return None if changed == dict(content) else changed
