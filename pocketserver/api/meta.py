"""/versions, /.well-known and /health."""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import Blueprint, Response

from pocketserver.api.http import services
from pocketserver.errors import not_found

bp = Blueprint("meta", __name__)

SUPPORTED_VERSIONS: tuple[str, ...] = (
    "r0.6.1",
    "v1.1",
    "v1.2",
    "v1.3",
    "v1.4",
    "v1.5",
    "v1.6",
    "v1.7",
    "v1.8",
    "v1.9",
    "v1.10",
    "v1.11",
)
"""Client-server spec versions whose chat surface is implemented.

Up to v1.11: accounts, rooms, sync, history, relations and threads, receipts,
typing, presence, account data, push rules and pushers, search, spaces, the server
side of end-to-end encryption, and the media repository with authenticated media
(v1.11). Later versions are not claimed until their changes are checked one by one.
Federation is partial (README "Federation"): what is missing fails with clear errors.
No unstable feature below names a federation feature.
"""

UNSTABLE_FEATURES: dict[str, bool] = {
    "uk.half-shot.msc2666.query_mutual_rooms": True,
    "org.matrix.msc3814": True,  # dehydrated devices (api/dehydrated.py)
}


@bp.get("/_matrix/client/versions")
async def versions() -> dict[str, object]:
    """client-server-api/_index.md "GET /_matrix/client/versions"."""
    return {"versions": list(SUPPORTED_VERSIONS), "unstable_features": dict(UNSTABLE_FEATURES)}


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
    """server-server-api.md "Server discovery": delegation, if ``serve_server_wellknown``.

    Names public_baseurl's host and port (443 by default). Synapse names server_name's
    host there (with port 443): the same when public_baseurl is https://server_name/;
    public_baseurl is the address known to reach this server when they differ.
    """
    config = services().config
    if not config.serve_server_wellknown:
        raise not_found("this server does not publish /.well-known/matrix/server")
    parts = urlsplit(config.public_baseurl)
    host = parts.hostname or config.server_name
    if ":" in host:
        host = f"[{host}]"
    return {"m.server": f"{host}:{parts.port or 443}"}
