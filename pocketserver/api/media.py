"""Content repository routes: upload, create, download, thumbnail, config, preview_url.

Spec: client-server API "Content repository" (authenticated media, v1.11) and the
deprecated unauthenticated ``/_matrix/media/v3`` downloads and thumbnails, which answer
404 unless ``enable_authenticated_media`` is false (as in Synapse; its ``config`` and
``preview_url``, which need a token anyway, stay served). Media of other servers is
served from the cache or fetched over federation (:mod:`pocketserver.media.remote`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import trio
from quart import Blueprint, Response, request

from pocketserver.api.http import require_auth, services
from pocketserver.api.streaming import StreamedBody
from pocketserver.core.identifiers import is_valid_server_name
from pocketserver.errors import MatrixError
from pocketserver.media.headers import media_headers
from pocketserver.media.repository import (
    DEFAULT_TIMEOUT_MS,
    MediaRepository,
    Served,
    StoredMedia,
)
from pocketserver.media.store import DRAIN_EXTRA, open_stream

bp = Blueprint("media", __name__)

MEDIA_PREFIXES = ("/_matrix/media/v3", "/_matrix/media/r0")
AUTHED = "/_matrix/client/v1/media"
MAX_NAME = 255
MAX_THUMBNAIL_SIDE = 10_000
DRAIN_LIMIT = 1024 * 1024


def _repo() -> MediaRepository:
    repo = services().media
    if not services().config.media.enable_media_repo:
        raise MatrixError(404, "M_UNRECOGNIZED", "this server has no media repository")
    return repo


def _legacy_allowed() -> None:
    """The deprecated unauthenticated endpoints are frozen unless configured otherwise."""
    if services().config.media.enable_authenticated_media:
        raise MatrixError(404, "M_NOT_FOUND", "use the authenticated media endpoints")


def _query_int(name: str, default: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:
        if default is None:
            raise MatrixError(400, "M_MISSING_PARAM", f"missing parameter: {name}")
        return default
    try:
        return int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None


def _query_bool(name: str) -> bool:
    raw = request.args.get(name)
    if raw is None or raw == "false":
        return False
    if raw == "true":
        return True
    raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be true or false")


async def _upload_params() -> tuple[str, str | None]:
    content_type = request.headers.get("Content-Type") or "application/octet-stream"
    filename = request.args.get("filename") or None
    if len(content_type) > MAX_NAME:
        raise MatrixError(400, "M_INVALID_PARAM", "Content-Type is too long")
    if filename is not None and (len(filename) > MAX_NAME or "\x00" in filename):
        raise MatrixError(400, "M_INVALID_PARAM", "filename is too long or not valid")
    limit = services().config.max_upload_size
    if request.content_length is not None and request.content_length > limit:
        if request.content_length <= limit + DRAIN_EXTRA:
            await _drain(request.content_length)
        raise MatrixError(413, "M_TOO_LARGE", f"upload is larger than the limit of {limit} bytes")
    return content_type, filename


def _body() -> AsyncIterator[bytes]:
    body = request.body
    if not isinstance(body, StreamedBody):  # pragma: no cover - app.py wiring
        raise RuntimeError("media routes need the streaming request class")
    return cast(AsyncIterator[bytes], body)


async def _drain(limit: int = DRAIN_LIMIT) -> None:
    """Read and drop what is left of a (small) body before answering an error early.

    An answer sent with the body unread can stall the next request on a keep-alive
    connection; past ``limit`` the connection is closed instead.
    """
    seen = 0
    async for chunk in _body():
        seen += len(chunk)
        if seen > limit:
            return


async def _check_quota(repo: MediaRepository, user_id: str) -> None:
    """Refuse an upload past the user's quota before reading it (drained as for a 413)."""
    size = request.content_length
    try:
        await repo.check_quota(user_id, size)
    except MatrixError:
        if size is not None and size <= DRAIN_EXTRA:
            await _drain(size)
        raise


async def upload() -> tuple[dict[str, object], int]:
    try:
        requester = await require_auth()
        repo = _repo()
        content_type, filename = await _upload_params()
        await _check_quota(repo, requester.user_id)
    except MatrixError:
        await _drain()
        raise
    uri = await repo.upload(
        requester.user_id, _body(), content_type=content_type, upload_name=filename
    )
    return {"content_uri": uri}, 200


async def upload_to(server_name: str, media_id: str) -> tuple[dict[str, object], int]:
    try:
        requester = await require_auth()
        repo = _repo()
        content_type, filename = await _upload_params()
        await repo.check_upload_to(requester.user_id, server_name, media_id)
        await _check_quota(repo, requester.user_id)
    except MatrixError:
        await _drain()
        raise
    await repo.upload_to(
        requester.user_id,
        server_name,
        media_id,
        _body(),
        content_type=content_type,
        upload_name=filename,
    )
    return {}, 200


async def create() -> tuple[dict[str, object], int]:
    await _drain()  # no body is expected; this path streams its bodies
    requester = await require_auth()
    # rc_media_create, per user, before the pending-uploads limit (as Synapse).
    services().ratelimits.media_create.check(requester.user_id, trio.current_time())
    uri, expires = await _repo().create(requester.user_id)
    return {"content_uri": uri, "unused_expires_at": expires}, 200


for _prefix in MEDIA_PREFIXES:
    bp.add_url_rule(f"{_prefix}/upload", f"upload{_prefix}", upload, methods=["POST"])
    bp.add_url_rule(
        f"{_prefix}/upload/<server_name>/<media_id>",
        f"upload_to{_prefix}",
        upload_to,
        methods=["PUT"],
    )
bp.add_url_rule("/_matrix/media/v1/create", "create", create, methods=["POST"])


# -- downloads -------------------------------------------------------------------


async def _send(served: Served) -> Response:
    try:
        stream = await open_stream(served.path)
    except FileNotFoundError:
        raise MatrixError(404, "M_NOT_FOUND", "media not found") from None
    headers = media_headers(served.content_type, served.filename, stream.size)
    response = Response(stream, status=200, headers=headers)
    # Quart's default (60 s) would cut off a large file on a slow link.
    response.timeout = 60 + stream.size // (32 * 1024)
    return response


async def _stored(
    repo: MediaRepository, server_name: str, media_id: str, allow_remote: bool
) -> StoredMedia:
    """Our upload, or another server's media (cached, or fetched over federation)."""
    timeout_ms = _query_int("timeout_ms", DEFAULT_TIMEOUT_MS)
    if repo.locality.is_mine(server_name):
        return await repo.get_local(server_name, media_id, timeout_ms)
    if not is_valid_server_name(server_name):
        raise MatrixError(404, "M_NOT_FOUND", "media not found")
    return await services().remote_media.get(server_name, media_id, timeout_ms, fetch=allow_remote)


async def _download(
    server_name: str, media_id: str, filename: str | None, *, allow_remote: bool = True
) -> Response:
    repo = _repo()
    row = await _stored(repo, server_name, media_id, allow_remote)
    return await _send(repo.served_original(row, filename))


def thumbnail_params() -> tuple[int, int, str, bool]:
    """``width``, ``height``, ``method`` and ``animated`` of a thumbnail request."""
    width = _query_int("width")
    height = _query_int("height")
    if not (0 < width <= MAX_THUMBNAIL_SIDE and 0 < height <= MAX_THUMBNAIL_SIDE):
        raise MatrixError(400, "M_INVALID_PARAM", "width and height must be from 1 to 10000")
    method = request.args.get("method", "scale")
    if method not in ("crop", "scale"):
        raise MatrixError(400, "M_INVALID_PARAM", "method must be crop or scale")
    return width, height, method, _query_bool("animated")


async def _thumbnail(server_name: str, media_id: str, *, allow_remote: bool = True) -> Response:
    repo = _repo()
    width, height, method, animated = thumbnail_params()
    row = await _stored(repo, server_name, media_id, allow_remote)
    return await _send(await repo.thumbnail(row, width, height, method, animated))


def _config() -> dict[str, object]:
    return {"m.upload.size": services().config.max_upload_size}


async def _preview() -> dict[str, object]:
    requester = await require_auth()
    previewer = services().url_previews
    if previewer is None:
        raise MatrixError(404, "M_UNRECOGNIZED", "URL previews are not enabled on this server")
    url = request.args.get("url")
    if not url:
        raise MatrixError(400, "M_MISSING_PARAM", "missing parameter: url")
    return await previewer.preview(url, requester.user_id)


@bp.get(f"{AUTHED}/download/<server_name>/<media_id>")
async def download(server_name: str, media_id: str) -> Response:
    await require_auth(allow_guest=True)
    return await _download(server_name, media_id, None)


@bp.get(f"{AUTHED}/download/<server_name>/<media_id>/<filename>")
async def download_named(server_name: str, media_id: str, filename: str) -> Response:
    await require_auth(allow_guest=True)
    return await _download(server_name, media_id, filename)


@bp.get(f"{AUTHED}/thumbnail/<server_name>/<media_id>")
async def thumbnail(server_name: str, media_id: str) -> Response:
    await require_auth(allow_guest=True)
    return await _thumbnail(server_name, media_id)


@bp.get(f"{AUTHED}/config")
async def config() -> dict[str, object]:
    await require_auth()
    _repo()
    return _config()


@bp.get(f"{AUTHED}/preview_url")
async def preview_url() -> dict[str, object]:
    return await _preview()


def _allow_remote() -> bool:
    """The legacy endpoints' ``allow_remote`` (default true): false serves other
    servers' media only from the cache (servers asking us over federation set it)."""
    return request.args.get("allow_remote", "true").lower() != "false"


async def legacy_download(server_name: str, media_id: str, filename: str | None = None) -> Response:
    _legacy_allowed()
    return await _download(server_name, media_id, filename, allow_remote=_allow_remote())


async def legacy_thumbnail(server_name: str, media_id: str) -> Response:
    _legacy_allowed()
    return await _thumbnail(server_name, media_id, allow_remote=_allow_remote())


async def legacy_config() -> dict[str, object]:
    # Served whatever enable_authenticated_media says, as by Synapse: it needs a token
    # anyway, and clients that predate Matrix 1.11 read the upload limit here.
    await require_auth()
    _repo()
    return _config()


async def legacy_preview_url() -> dict[str, object]:
    # Authenticated already; Synapse keeps it too (see legacy_config).
    return await _preview()


for _prefix in MEDIA_PREFIXES:
    _name = _prefix.rsplit("/", 1)[1]
    bp.add_url_rule(
        f"{_prefix}/download/<server_name>/<media_id>", f"legacy_download_{_name}", legacy_download
    )
    bp.add_url_rule(
        f"{_prefix}/download/<server_name>/<media_id>/<filename>",
        f"legacy_download_named_{_name}",
        legacy_download,
    )
    bp.add_url_rule(
        f"{_prefix}/thumbnail/<server_name>/<media_id>",
        f"legacy_thumbnail_{_name}",
        legacy_thumbnail,
    )
    bp.add_url_rule(f"{_prefix}/config", f"legacy_config_{_name}", legacy_config)
    bp.add_url_rule(f"{_prefix}/preview_url", f"legacy_preview_url_{_name}", legacy_preview_url)
