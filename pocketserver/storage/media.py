"""Tables of the media repository: ``local_media``, ``remote_media`` (other servers'
media cached here), ``media_thumbnails`` and ``media_usage``."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MediaRow:
    media_id: str
    user_id: str
    created_ts: int
    expires_ts: int | None
    uploaded_ts: int | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    sha256: str | None

    @property
    def pending(self) -> bool:
        return self.sha256 is None


@dataclass(frozen=True, slots=True)
class ThumbnailRow:
    sha256: str
    width: int
    height: int
    method: str
    content_type: str
    size: int


_MEDIA_COLUMNS = (
    "media_id, user_id, created_ts, expires_ts, uploaded_ts, content_type, upload_name, "
    "size, sha256"
)


def _media(row: sqlite3.Row) -> MediaRow:
    return MediaRow(*tuple(row))


def get_media(conn: sqlite3.Connection, media_id: str) -> MediaRow | None:
    row = conn.execute(
        f"SELECT {_MEDIA_COLUMNS} FROM local_media WHERE media_id = ?", (media_id,)
    ).fetchone()
    return None if row is None else _media(row)


def insert_media(conn: sqlite3.Connection, media: MediaRow) -> None:
    conn.execute(
        f"INSERT INTO local_media ({_MEDIA_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            media.media_id,
            media.user_id,
            media.created_ts,
            media.expires_ts,
            media.uploaded_ts,
            media.content_type,
            media.upload_name,
            media.size,
            media.sha256,
        ),
    )


def complete_pending(
    conn: sqlite3.Connection,
    media_id: str,
    *,
    uploaded_ts: int,
    content_type: str,
    upload_name: str | None,
    size: int,
    sha256: str,
) -> bool:
    """Fill in a pending upload; False if it is no longer pending (or gone)."""
    cur = conn.execute(
        "UPDATE local_media SET uploaded_ts = ?, content_type = ?, upload_name = ?, size = ?,"
        " sha256 = ?, expires_ts = NULL WHERE media_id = ? AND sha256 IS NULL",
        (uploaded_ts, content_type, upload_name, size, sha256, media_id),
    )
    return cur.rowcount == 1


def count_pending(conn: sqlite3.Connection, user_id: str, now_ms: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM local_media WHERE user_id = ? AND sha256 IS NULL AND expires_ts > ?",
        (user_id, now_ms),
    ).fetchone()
    return int(row[0])


def stored_bytes(conn: sqlite3.Connection, user_id: str) -> int:
    """Bytes of the user's uploaded media (each upload in full, even if its content is
    shared); pending uploads count nothing. Kept by the triggers of migration 015."""
    row = conn.execute("SELECT bytes FROM media_usage WHERE user_id = ?", (user_id,)).fetchone()
    return 0 if row is None else int(row[0])


def stored_bytes_counted(conn: sqlite3.Connection, user_id: str) -> int:
    """:func:`stored_bytes` counted from ``local_media`` itself (to check the counter)."""
    row = conn.execute(
        "SELECT coalesce(sum(size), 0) FROM local_media WHERE user_id = ? AND sha256 IS NOT NULL",
        (user_id,),
    ).fetchone()
    return int(row[0])


def delete_expired_pending(conn: sqlite3.Connection, now_ms: int) -> int:
    cur = conn.execute(
        "DELETE FROM local_media WHERE sha256 IS NULL AND expires_ts <= ?", (now_ms,)
    )
    return cur.rowcount


def uploaded_before(conn: sqlite3.Connection, before_ts: int, limit: int) -> list[str]:
    """Media IDs of uploads older than ``before_ts`` (for media retention)."""
    rows = conn.execute(
        "SELECT media_id FROM local_media WHERE sha256 IS NOT NULL AND uploaded_ts < ?"
        " ORDER BY uploaded_ts LIMIT ?",
        (before_ts, limit),
    ).fetchall()
    return [r[0] for r in rows]


def delete_media(conn: sqlite3.Connection, media_id: str) -> str | None:
    """Delete one media row; return its sha256 if no other row uses that content."""
    row = conn.execute(
        "DELETE FROM local_media WHERE media_id = ? RETURNING sha256", (media_id,)
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return _release_content(conn, str(row[0]))


def content_in_use(conn: sqlite3.Connection, sha256: str) -> bool:
    """Whether a local upload or a cached remote media item names this content."""
    row = conn.execute(
        "SELECT 1 FROM local_media WHERE sha256 = ?"
        " UNION ALL SELECT 1 FROM remote_media WHERE sha256 = ? LIMIT 1",
        (sha256, sha256),
    ).fetchone()
    return row is not None


def _release_content(conn: sqlite3.Connection, sha256: str) -> str | None:
    """``sha256`` if nothing names that content any more (its thumbnails' rows gone)."""
    if content_in_use(conn, sha256):
        return None
    conn.execute("DELETE FROM media_thumbnails WHERE sha256 = ?", (sha256,))
    return sha256


# --- remote media (cached) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteMediaRow:
    origin: str
    media_id: str
    content_type: str
    upload_name: str | None
    size: int
    sha256: str
    fetched_ts: int
    last_access_ts: int


_REMOTE_COLUMNS = (
    "origin, media_id, content_type, upload_name, size, sha256, fetched_ts, last_access_ts"
)


def get_remote_media(conn: sqlite3.Connection, origin: str, media_id: str) -> RemoteMediaRow | None:
    row = conn.execute(
        f"SELECT {_REMOTE_COLUMNS} FROM remote_media WHERE origin = ? AND media_id = ?",
        (origin, media_id),
    ).fetchone()
    return None if row is None else RemoteMediaRow(*tuple(row))


def insert_remote_media(conn: sqlite3.Connection, media: RemoteMediaRow) -> str | None:
    """Record a fetched item (replacing an older record of it); return the sha256 of
    content the replaced record held that nothing names any more."""
    old = conn.execute(
        "DELETE FROM remote_media WHERE origin = ? AND media_id = ? RETURNING sha256",
        (media.origin, media.media_id),
    ).fetchone()
    conn.execute(
        f"INSERT INTO remote_media ({_REMOTE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            media.origin,
            media.media_id,
            media.content_type,
            media.upload_name,
            media.size,
            media.sha256,
            media.fetched_ts,
            media.last_access_ts,
        ),
    )
    if old is None or old[0] == media.sha256:
        return None
    return _release_content(conn, str(old[0]))


def touch_remote_media(
    conn: sqlite3.Connection, keys: list[tuple[str, str]], access_ts: int
) -> None:
    conn.executemany(
        "UPDATE remote_media SET last_access_ts = max(last_access_ts, ?)"
        " WHERE origin = ? AND media_id = ?",
        [(access_ts, origin, media_id) for origin, media_id in keys],
    )


def remote_accessed_before(
    conn: sqlite3.Connection, before_ts: int, limit: int
) -> list[tuple[str, str]]:
    """(origin, media_id) of cached items not asked for since ``before_ts``."""
    rows = conn.execute(
        "SELECT origin, media_id FROM remote_media WHERE last_access_ts < ?"
        " ORDER BY last_access_ts LIMIT ?",
        (before_ts, limit),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def delete_remote_media(conn: sqlite3.Connection, origin: str, media_id: str) -> str | None:
    """Forget one cached item; return its sha256 if nothing else names that content."""
    row = conn.execute(
        "DELETE FROM remote_media WHERE origin = ? AND media_id = ? RETURNING sha256",
        (origin, media_id),
    ).fetchone()
    return None if row is None else _release_content(conn, str(row[0]))


def remote_least_recent(conn: sqlite3.Connection, limit: int) -> list[tuple[str, str, int]]:
    """(origin, media_id, size) of the cached items asked for least recently."""
    rows = conn.execute(
        "SELECT origin, media_id, size FROM remote_media ORDER BY last_access_ts LIMIT ?",
        (limit,),
    ).fetchall()
    return [(r[0], r[1], int(r[2])) for r in rows]


def remote_cache_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of cached remote media (each item in full)."""
    return int(conn.execute("SELECT coalesce(sum(size), 0) FROM remote_media").fetchone()[0])


def thumbnails(conn: sqlite3.Connection, sha256: str) -> list[ThumbnailRow]:
    rows = conn.execute(
        "SELECT sha256, width, height, method, content_type, size FROM media_thumbnails"
        " WHERE sha256 = ?",
        (sha256,),
    ).fetchall()
    return [ThumbnailRow(*tuple(r)) for r in rows]


def insert_thumbnail(conn: sqlite3.Connection, thumb: ThumbnailRow) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO media_thumbnails"
        " (sha256, width, height, method, content_type, size) VALUES (?, ?, ?, ?, ?, ?)",
        (thumb.sha256, thumb.width, thumb.height, thumb.method, thumb.content_type, thumb.size),
    )
