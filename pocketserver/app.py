"""The Quart-trio application: routes for one listener's resources, and the error shape.

Every error leaves as Matrix JSON: unknown path 404 ``M_UNRECOGNIZED``, wrong method
405 ``M_UNRECOGNIZED``, oversized body 413 ``M_TOO_LARGE``, a :class:`MatrixError`
as its status and errcode, and anything unexpected 500 ``M_UNKNOWN`` with the
request id in the log.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from quart import Response, g, request
from quart.json.provider import DefaultJSONProvider
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from pocketserver.api import (
    account,
    account_data,
    admin_register,
    admin_tokens,
    appservice,
    dehydrated,
    devices,
    directory,
    discovery,
    e2e_keys,
    ephemeral,
    federation_e2e,
    history,
    key_backup,
    legacy_sync,
    login,
    media,
    meta,
    openid,
    profile,
    public_rooms,
    push,
    pushers,
    rawpath,
    register,
    relations,
    reports,
    rooms,
    search,
    sync,
    third_party_invites,
    thirdparty,
    threepid,
    to_device,
    upgrades,
    user_directory,
    voip,
    whois,
)
from pocketserver.api.federation import auth as federation_auth
from pocketserver.api.federation import discovery as federation_discovery
from pocketserver.api.federation import keys
from pocketserver.api.federation import media as federation_media
from pocketserver.api.federation import query as federation_query
from pocketserver.api.federation import rooms as federation_rooms
from pocketserver.api.streaming import BackpressureHTTPConnection, StreamingRequest
from pocketserver.config.log_settings import LogSettings
from pocketserver.errors import MatrixError
from pocketserver.logs import access_line_level
from pocketserver.services import Services

log = logging.getLogger("pocketserver.access")
error_log = logging.getLogger("pocketserver.app")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
}

_HTTP_ERRCODES = {
    404: ("M_UNRECOGNIZED", "Unrecognized request"),
    405: ("M_UNRECOGNIZED", "Unrecognized request method for this endpoint"),
    413: ("M_TOO_LARGE", "Request body too large"),
}

_request_ids = itertools.count(1)

STREAMED_BODY_PREFIXES = ("/_matrix/media/",)
"""Uploads are streamed to disk by their routes, never read whole into memory."""


def _streams_its_body(path: str) -> bool:
    return path.startswith(STREAMED_BODY_PREFIXES)


def _has_body() -> bool:
    """Whatever the method (clients send bodies with GET too): a length or chunks."""
    return (
        bool(request.content_length)
        or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )


def _json_error(status: int, body: dict[str, object]) -> Response:
    response = Response(_dumps(body), status=status, content_type="application/json")
    if status == 429:
        # client-server-api "Rate limiting": homeservers SHOULD send Retry-After (whole
        # seconds, RFC 9110) with every 429; retry_after_ms stays for older clients.
        wait_ms = body.get("retry_after_ms")
        seconds = math.ceil(wait_ms / 1000) if isinstance(wait_ms, int) and wait_ms > 0 else 1
        response.headers["Retry-After"] = str(max(1, seconds))
    return response


def _dumps(body: dict[str, object]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


class CompactJSONProvider(DefaultJSONProvider):
    """JSON answers as the default provider makes them with ``compact``, unsorted keys and
    UTF-8 text, but from one encoder built once (``json.dumps`` with options builds a
    new encoder for every response)."""

    sort_keys = False
    ensure_ascii = False
    compact = True

    def __init__(self, app: QuartTrio) -> None:
        super().__init__(app)
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), default=self.default
        )

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = self._encoder.encode(self._prepare_response_obj(args, kwargs))
        return self._app.response_class(f"{body}\n", mimetype=self.mimetype)  # type: ignore[return-value]


class PocketApp(QuartTrio):
    """Matches routes on the raw path (api/rawpath.py): ``%2F`` never splits a segment;
    URL builders are compiled only if used (``rawpath.LazyBuildRule``)."""

    url_rule_class = rawpath.LazyBuildRule  # type: ignore[assignment]  # as Quart sets its own

    def create_url_adapter(self, request: Any) -> MapAdapter | None:
        adapter = super().create_url_adapter(request)
        if adapter is not None and request is not None:
            adapter.path_info = rawpath.routing_path(request.scope)
        return adapter


def create_app(
    services: Services,
    resources: Iterable[str] = ("client", "federation"),
    *,
    x_forwarded: bool = False,
) -> QuartTrio:
    """Build the app for one listener, with the routes of its ``resources``."""
    app = PocketApp("pocketserver")
    rawpath.install(app.url_map)
    # Media uploads stream to disk with backpressure (api/streaming.py).
    app.request_class = StreamingRequest
    app.asgi_http_class = BackpressureHTTPConnection
    # A doubled slash must not be answered with Werkzeug's HTML redirect.
    app.url_map.merge_slashes = False
    app.config["POCKET_SERVICES"] = services
    app.config["POCKET_X_FORWARDED"] = x_forwarded
    app.config["MAX_CONTENT_LENGTH"] = services.config.max_request_body_size
    app.config["BODY_TIMEOUT"] = 60
    app.json = CompactJSONProvider(app)
    wanted = set(resources)
    if "client" in wanted:
        for bp in (
            meta.bp,
            login.bp,
            admin_register.bp,
            register.bp,
            account.bp,
            devices.bp,
            threepid.bp,
            thirdparty.bp,
            appservice.bp,
            admin_tokens.bp,
            rooms.bp,
            sync.bp,
            legacy_sync.bp,
            directory.bp,
            profile.bp,
            history.bp,
            relations.bp,
            account_data.bp,
            voip.bp,
            user_directory.bp,
            ephemeral.bp,
            push.bp,
            pushers.bp,
            search.bp,
            public_rooms.bp,
            discovery.bp,
            upgrades.bp,
            reports.bp,
            to_device.bp,
            key_backup.bp,
            e2e_keys.bp,
            dehydrated.bp,
            openid.bp,
            whois.bp,
        ):
            app.register_blueprint(bp)
    if wanted & {"client", "media"}:
        app.register_blueprint(media.bp)
    if wanted & {"client", "health"} and "client" not in wanted:
        app.add_url_rule("/health", view_func=meta.health)
    if wanted & {"federation", "keys"}:
        app.register_blueprint(keys.bp)
    if wanted & {"client", "federation"}:
        # /.well-known/matrix/server: on client listeners too (Synapse serves it with the
        # client resource), as a reverse proxy on 443 forwards it to the client port.
        app.register_blueprint(meta.federation_bp)
    if "federation" in wanted:
        app.register_blueprint(federation_query.bp)
        app.register_blueprint(federation_discovery.bp)
        app.register_blueprint(federation_media.bp)
        app.register_blueprint(federation_rooms.bp)
        app.register_blueprint(federation_e2e.bp)
        app.register_blueprint(third_party_invites.federation_bp)
    if wanted & {"federation", "openid"}:
        app.register_blueprint(openid.federation_bp)
    _install_hooks(app, services.config.logs)
    return app


def _long_poll_ms() -> int:
    """The ``timeout`` a long-poll (/sync, /events, ...) asked to wait, in ms."""
    timeout = request.args.get("timeout")
    if timeout is None or not timeout.isdigit() or len(timeout) > 9:
        return 0
    return int(timeout)


def _install_hooks(app: QuartTrio, logs: LogSettings) -> None:
    @app.before_request
    async def start_request() -> Response | None:
        g.request_id = f"req-{next(_request_ids)}"
        g.start = time.perf_counter()
        g.user_id = None
        if request.method == "OPTIONS":
            return Response("", status=200)
        if _has_body() and not _streams_its_body(request.path):
            # Read the (size-limited) body before any route can answer early: a
            # response sent with the body still unread can stall the next request
            # on the same keep-alive connection.
            await request.get_data(cache=True)
        return None

    # After the body is read: X-Matrix signatures of /_matrix/federation/* requests.
    app.before_request(federation_auth.authenticate_federation_request)

    @app.after_request
    async def finish_request(response: Response) -> Response:
        response.headers.update(CORS_HEADERS)
        started = g.get("start")
        duration_ms = (time.perf_counter() - started) * 1000 if started else 0.0
        level = access_line_level(logs, response.status_code, duration_ms, _long_poll_ms())
        if not log.isEnabledFor(level):
            return response
        # request.path never includes the query string, where secrets could be.
        log.log(
            level,
            "%s %s %s %s %.1fms %s",
            g.get("request_id", "-"),
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            g.get("user_id") or "-",
        )
        return response

    @app.errorhandler(MatrixError)
    async def matrix_error(e: MatrixError) -> Response:
        return _json_error(e.status, e.to_json())

    @app.errorhandler(HTTPException)
    async def http_error(e: HTTPException) -> Response:
        status = e.code or 500
        errcode, message = _HTTP_ERRCODES.get(status, ("M_UNKNOWN", e.description or e.name))
        if status >= 500:
            error_log.error("%s: HTTP %s: %s", g.get("request_id", "-"), status, e)
        return _json_error(status, {"errcode": errcode, "error": message})

    @app.errorhandler(Exception)
    async def unexpected(e: Exception) -> Response:
        request_id = g.get("request_id", "-")
        error_log.exception(
            "%s: unhandled error in %s %s", request_id, request.method, request.path
        )
        return _json_error(
            500, {"errcode": "M_UNKNOWN", "error": f"Internal server error ({request_id})"}
        )
