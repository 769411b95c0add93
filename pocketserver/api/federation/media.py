"""Federation media (server-server API "Content Repository"): our uploads, for servers
that signed their request.

``GET /_matrix/federation/v1/media/download/{mediaId}`` and ``/thumbnail/{mediaId}``
answer ``multipart/mixed``: an ``application/json`` part (``{}``) and the bytes with
their Content-Type and Content-Disposition (:mod:`pocketserver.media.multipart`, in
the layout Synapse writes and reads). The file is streamed, never held whole. Only
our own uploads are served: another server's media cached here, or an unknown ID, is
404 ``M_NOT_FOUND`` (as Synapse). X-Matrix authentication is checked before these
run (api/federation/auth.py): no signature is 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Blueprint, Response, request

from pocketserver.api.http import services
from pocketserver.api.media import thumbnail_params
from pocketserver.errors import MatrixError
from pocketserver.media.headers import content_disposition
from pocketserver.media.multipart import (
    multipart_content_type,
    new_boundary,
    write_head,
    write_tail,
)
from pocketserver.media.repository import DEFAULT_TIMEOUT_MS, MediaRepository, Served
from pocketserver.media.store import FileStream, open_stream

bp = Blueprint("federation_media", __name__)

PREFIX = "/_matrix/federation/v1/media"


def _repo() -> MediaRepository:
    s = services()
    if not s.config.media.enable_media_repo:
        raise MatrixError(404, "M_NOT_FOUND", "this server has no media repository")
    return s.media


def _timeout_ms() -> int:
    raw = request.args.get("timeout_ms")
    try:
        return DEFAULT_TIMEOUT_MS if raw is None else int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "timeout_ms must be an integer") from None


async def _parts(head: bytes, stream: FileStream, tail: bytes) -> AsyncIterator[bytes]:
    try:
        yield head
        async for chunk in stream:
            yield chunk
        yield tail
    finally:
        stream.close()


async def _send_multipart(served: Served) -> Response:
    try:
        stream = await open_stream(served.path)
    except FileNotFoundError:
        raise MatrixError(404, "M_NOT_FOUND", "media not found") from None
    boundary = new_boundary()
    disposition = content_disposition(served.content_type, served.filename)
    head = write_head(boundary, served.content_type, disposition)
    tail = write_tail(boundary)
    headers = {
        "Content-Type": multipart_content_type(boundary),
        "Content-Length": str(len(head) + stream.size + len(tail)),
        "Cache-Control": "private, max-age=86400",
    }
    response = Response(_parts(head, stream, tail), status=200, headers=headers)
    response.timeout = 60 + stream.size // (32 * 1024)
    return response


@bp.get(f"{PREFIX}/download/<media_id>")
async def download(media_id: str) -> Response:
    repo = _repo()
    row = await repo.get_local(repo.server_name, media_id, _timeout_ms())
    return await _send_multipart(repo.served_original(row))


@bp.get(f"{PREFIX}/thumbnail/<media_id>")
async def thumbnail(media_id: str) -> Response:
    repo = _repo()
    width, height, method, animated = thumbnail_params()
    row = await repo.get_local(repo.server_name, media_id, _timeout_ms())
    return await _send_multipart(await repo.thumbnail(row, width, height, method, animated))
