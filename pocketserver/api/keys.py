"""/_matrix/key/v2/server and /_matrix/federation/v1/version."""

from __future__ import annotations

import time

from quart import Blueprint

from pocketserver import __version__
from pocketserver.api.http import services
from pocketserver.core.crypto import make_server_keys_response

bp = Blueprint("keys", __name__)


@bp.get("/_matrix/key/v2/server")
@bp.get("/_matrix/key/v2/server/<key_id>")
async def server_keys(key_id: str | None = None) -> dict[str, object]:
    """server-server-api.md "Publishing Keys": this server's keys, signed by itself.

    The ``key_id`` path form is deprecated; the whole response is returned either way.
    """
    s = services()
    valid_until = int(time.time() * 1000) + s.config.key_refresh_interval_ms
    return make_server_keys_response(s.config.server_name, s.signing_key, None, valid_until)


@bp.get("/_matrix/federation/v1/version")
async def federation_version() -> dict[str, object]:
    """server-server-api.md "GET /_matrix/federation/v1/version"."""
    return {"server": {"name": "pocketserver", "version": __version__}}
