"""/versions, /.well-known and /health."""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import Blueprint, Response

from pocketserver.api.http import services
from pocketserver.errors import not_found

bp = Blueprint("meta", __name__)

SUPPORTED_VERSIONS: tuple[str, ...] = ()
"""Client-server spec versions whose endpoints are all implemented here.

Empty until the client-server API (rooms, sync) lands: login, logout and whoami
alone do not make any spec version. Each feature that completes a version adds it.
"""


@bp.get("/_matrix/client/versions")
async def versions() -> dict[str, object]:
    """client-server-api/_index.md "GET /_matrix/client/versions"."""
    return {"versions": list(SUPPORTED_VERSIONS), "unstable_features": {}}


@bp.get("/.well-known/matrix/client")
async def well_known_client() -> dict[str, object]:
    """client-server-api/_index.md "Well-known URIs"."""
    return {"m.homeserver": {"base_url": services().config.public_baseurl}}


@bp.get("/health")
async def health() -> Response:
    return Response("OK", content_type="text/plain")


federation_bp = Blueprint("meta_federation", __name__)


@federation_bp.get("/.well-known/matrix/server")
async def well_known_server() -> dict[str, object]:
    """server-server-api.md "Server discovery": delegation, if ``serve_server_wellknown``."""
    config = services().config
    if not config.serve_server_wellknown:
        raise not_found("this server does not publish /.well-known/matrix/server")
    parts = urlsplit(config.public_baseurl)
    host = parts.hostname or config.server_name
    if ":" in host:
        host = f"[{host}]"
    return {"m.server": f"{host}:{parts.port or 443}"}
