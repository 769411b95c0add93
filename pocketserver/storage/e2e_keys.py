"""The ``e2e_*`` tables: device keys, one-time and fallback keys, cross-signing keys,
uploaded signatures and the device list stream (migration 010).

Key objects are stored as compact JSON with sorted keys. Functions take a connection
and never commit: the caller's transaction decides.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

CHUNK = 500
"""Rows per ``IN (...)`` list: well under SQLite's host parameter limit."""

T = TypeVar("T")


class KeyConflictError(Exception):
    """A one-time key ID is already stored with different content."""


class KeyLimitError(Exception):
    """Storing the keys would take a device past its limit of one-time keys."""


def encode(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _decode(text: str) -> dict[str, object]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


# --- device keys ----------------------------------------------------------------------


def device_exists(conn: sqlite3.Connection, user_id: str, device_id: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)
    ).fetchone()
    return row is not None


def get_device_keys(
    conn: sqlite3.Connection, user_id: str, device_id: str
) -> dict[str, object] | None:
    row = conn.execute(
        "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    return _decode(str(row[0])) if row else None


def set_device_keys(
    conn: sqlite3.Connection, user_id: str, device_id: str, keys: dict[str, object]
) -> bool:
    """Store a device's keys; return False if the same keys were stored already.

    Signatures uploaded for the device's earlier keys no longer apply and are dropped.
    """
    text = encode(keys)
    row = conn.execute(
        "SELECT key_json FROM e2e_device_keys WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    if row is not None and str(row[0]) == text:
        return False
    conn.execute(
        "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json",
        (user_id, device_id, text),
    )
    if row is not None:
        conn.execute(
            "DELETE FROM e2e_signatures WHERE target_user_id = ? AND target_key_id = ?",
            (user_id, device_id),
        )
    return True


@dataclass(frozen=True, slots=True)
class DeviceKeysRow:
    user_id: str
    device_id: str
    keys: dict[str, object]
    display_name: str | None


def device_keys_of(conn: sqlite3.Connection, wanted: dict[str, list[str]]) -> list[DeviceKeysRow]:
    """The stored device keys of ``wanted`` (user ID -> device IDs, ``[]`` for all)."""
    out: list[DeviceKeysRow] = []
    everything = [u for u, devices in wanted.items() if not devices]
    sql = (
        "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
        " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
    )
    for chunk in _chunks(everything):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"{sql} WHERE k.user_id IN ({marks})", tuple(chunk))
        out.extend(DeviceKeysRow(r[0], r[1], _decode(r[2]), r[3]) for r in rows)
    for user_id, devices in wanted.items():
        for chunk in _chunks(list(dict.fromkeys(devices))):
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"{sql} WHERE k.user_id = ? AND k.device_id IN ({marks})", (user_id, *chunk)
            )
            out.extend(DeviceKeysRow(r[0], r[1], _decode(r[2]), r[3]) for r in rows)
    return out


# --- one-time and fallback keys ---------------------------------------------------------


def add_one_time_keys(
    conn: sqlite3.Connection,
    user_id: str,
    device_id: str,
    keys: Iterable[tuple[str, str, str]],
    max_stored: int,
) -> None:
    """Store ``(algorithm, key_id, key_json)`` one-time keys; identical ones are skipped.

    Raises:
        KeyConflictError: a key ID is stored with different content.
        KeyLimitError: the device would hold more than ``max_stored`` keys.
    """
    new = 0
    for algorithm, key_id, text in keys:
        row = conn.execute(
            "SELECT key_json FROM e2e_one_time_keys"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ? AND key_id = ?",
            (user_id, device_id, algorithm, key_id),
        ).fetchone()
        if row is not None:
            if str(row[0]) != text:
                raise KeyConflictError(f"one-time key {algorithm}:{key_id} already exists")
            continue
        conn.execute(
            "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
            " VALUES (?, ?, ?, ?, ?)",
            (user_id, device_id, algorithm, key_id, text),
        )
        new += 1
    if new:
        (count,) = conn.execute(
            "SELECT count(*) FROM e2e_one_time_keys WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        ).fetchone()
        if int(count) > max_stored:
            raise KeyLimitError(f"a device may hold at most {max_stored} one-time keys")


def one_time_key_counts(conn: sqlite3.Connection, user_id: str, device_id: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT algorithm, count(*) FROM e2e_one_time_keys"
        " WHERE user_id = ? AND device_id = ? GROUP BY algorithm",
        (user_id, device_id),
    )
    return {str(r[0]): int(r[1]) for r in rows}


def set_fallback_keys(
    conn: sqlite3.Connection, user_id: str, device_id: str, keys: Iterable[tuple[str, str, str]]
) -> None:
    """Replace the device's fallback key of each algorithm; a new key is unused.

    Uploading the very key already stored keeps its ``used`` mark.
    """
    for algorithm, key_id, text in keys:
        conn.execute(
            "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
            " VALUES (?, ?, ?, ?, ?, 0)"
            " ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET"
            " key_id = excluded.key_id, key_json = excluded.key_json, used = 0"
            " WHERE key_id != excluded.key_id OR key_json != excluded.key_json",
            (user_id, device_id, algorithm, key_id, text),
        )


def unused_fallback_algorithms(conn: sqlite3.Connection, user_id: str, device_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT algorithm FROM e2e_fallback_keys"
        " WHERE user_id = ? AND device_id = ? AND used = 0 ORDER BY algorithm",
        (user_id, device_id),
    )
    return [str(r[0]) for r in rows]


Claimed = dict[str, dict[str, dict[str, object]]]


def claim_keys(conn: sqlite3.Connection, wanted: Iterable[tuple[str, str, str]]) -> Claimed:
    """Claim one key per ``(user_id, device_id, algorithm)``: the oldest one-time key
    (deleted, so never handed out twice), else the fallback key (marked used).

    Returns:
        user ID -> device ID -> ``{"<algorithm>:<key_id>": key}``.
    """
    out: Claimed = {}
    for user_id, device_id, algorithm in wanted:
        row = conn.execute(
            "SELECT id, key_id, key_json FROM e2e_one_time_keys"
            " WHERE user_id = ? AND device_id = ? AND algorithm = ? ORDER BY id LIMIT 1",
            (user_id, device_id, algorithm),
        ).fetchone()
        if row is not None:
            conn.execute("DELETE FROM e2e_one_time_keys WHERE id = ?", (row[0],))
        else:
            row = conn.execute(
                "SELECT NULL, key_id, key_json FROM e2e_fallback_keys"
                " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                (user_id, device_id, algorithm),
            ).fetchone()
            if row is None:
                continue
            conn.execute(
                "UPDATE e2e_fallback_keys SET used = 1"
                " WHERE user_id = ? AND device_id = ? AND algorithm = ?",
                (user_id, device_id, algorithm),
            )
        out.setdefault(user_id, {}).setdefault(device_id, {})[f"{algorithm}:{row[1]}"] = json.loads(
            row[2]
        )
    return out


# --- cross-signing keys and signatures ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrossSigningKey:
    user_id: str
    usage: str
    public_key: str
    key: dict[str, object]


def cross_signing_keys(
    conn: sqlite3.Connection, user_ids: Collection[str]
) -> dict[str, dict[str, CrossSigningKey]]:
    """user ID -> usage -> key, for the users that have any."""
    out: dict[str, dict[str, CrossSigningKey]] = {}
    for chunk in _chunks(list(user_ids)):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT user_id, usage, public_key, key_json FROM e2e_cross_signing_keys"
            f" WHERE user_id IN ({marks})",
            tuple(chunk),
        )
        for r in rows:
            key = CrossSigningKey(r[0], r[1], r[2], _decode(r[3]))
            out.setdefault(key.user_id, {})[key.usage] = key
    return out


def set_cross_signing_key(
    conn: sqlite3.Connection, user_id: str, usage: str, public_key: str, key: dict[str, object]
) -> None:
    conn.execute(
        "INSERT INTO e2e_cross_signing_keys (user_id, usage, public_key, key_json)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, usage) DO UPDATE SET"
        " public_key = excluded.public_key, key_json = excluded.key_json",
        (user_id, usage, public_key, encode(key)),
    )


def device_ids(conn: sqlite3.Connection, user_id: str) -> set[str]:
    return {
        str(r[0])
        for r in conn.execute("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))
    }


def add_signature(
    conn: sqlite3.Connection,
    target_user_id: str,
    target_key_id: str,
    signer_user_id: str,
    signer_key_id: str,
    signature: str,
) -> None:
    conn.execute(
        "INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id,"
        " signer_key_id, signature) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT DO UPDATE SET signature = excluded.signature",
        (target_user_id, target_key_id, signer_user_id, signer_key_id, signature),
    )


Signatures = dict[tuple[str, str], dict[str, dict[str, str]]]
"""(target user, target key ID) -> signer user -> signer key ID -> signature."""


def signatures_for(conn: sqlite3.Connection, user_ids: Collection[str], viewer: str) -> Signatures:
    """Uploaded signatures on the keys of ``user_ids`` that ``viewer`` may see.

    Spec (end_to_end_encryption.md "Key and signature security"): a user sees
    signatures made by the key's own user (their devices, their self-signing key) and
    signatures made by the user themself; never another user's user-signing key's.
    """
    out: Signatures = {}
    for chunk in _chunks(list(user_ids)):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature"
            f" FROM e2e_signatures WHERE target_user_id IN ({marks})"
            " AND (signer_user_id = target_user_id OR signer_user_id = ?)",
            (*chunk, viewer),
        )
        for r in rows:
            out.setdefault((r[0], r[1]), {}).setdefault(r[2], {})[r[3]] = r[4]
    return out


# --- the device list stream --------------------------------------------------------------


def record_change(
    conn: sqlite3.Connection,
    user_id: str,
    only_for: str | None = None,
    *,
    device_id: str | None = None,
) -> int:
    """Note that ``user_id``'s devices or keys changed; return the new stream position.

    ``only_for``: only that user hears of it (instead of everyone sharing a room).
    ``device_id``: the device that changed (None for cross-signing keys), which the
    ``m.device_list_update`` EDUs name."""
    cur = conn.execute(
        "INSERT INTO e2e_device_list_changes (user_id, only_for, device_id) VALUES (?, ?, ?)",
        (user_id, only_for, device_id),
    )
    return int(cur.lastrowid or 0)


def stream_position(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(stream_id) FROM e2e_device_list_changes").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def last_device_change(conn: sqlite3.Connection, user_id: str, before: int | None = None) -> int:
    """The stream position of the user's latest change of a device (before ``before``,
    if given; 0 if none): the ``stream_id`` of their device list over federation."""
    row = conn.execute(
        "SELECT max(stream_id) FROM e2e_device_list_changes"
        " WHERE user_id = ? AND only_for IS NULL AND device_id IS NOT NULL AND stream_id < ?",
        (user_id, (1 << 62) if before is None else before),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def delete_cross_signing_key(conn: sqlite3.Connection, user_id: str, usage: str) -> bool:
    cur = conn.execute(
        "DELETE FROM e2e_cross_signing_keys WHERE user_id = ? AND usage = ?", (user_id, usage)
    )
    return cur.rowcount > 0
