"""Registering a client-server route under every prefix clients use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from quart import Blueprint

F = TypeVar("F", bound=Callable[..., object])

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
"""v3 is current; r0 is the pre-v1.1 name that older bots and SDKs still call."""


def client_route(bp: Blueprint, path: str, *, methods: list[str]) -> Callable[[F], F]:
    """Register the decorated view at ``path`` under each client API prefix."""

    def decorator(fn: F) -> F:
        for prefix in CLIENT_PREFIXES:
            bp.add_url_rule(
                prefix + path,
                endpoint=f"{fn.__name__}{prefix.replace('/', '_')}",
                view_func=fn,  # type: ignore[arg-type]
                methods=methods,
            )
        return fn

    return decorator


CLIENT_V1_PREFIX = "/_matrix/client/v1"


def client_v1_route(bp: Blueprint, path: str, *, methods: list[str]) -> Callable[[F], F]:
    """Register the decorated view at ``path`` under ``/_matrix/client/v1`` (endpoints
    added to the spec after v3, e.g. hierarchy, room_summary, timestamp_to_event)."""

    def decorator(fn: F) -> F:
        bp.add_url_rule(
            CLIENT_V1_PREFIX + path,
            endpoint=f"{fn.__name__}_client_v1",
            view_func=fn,  # type: ignore[arg-type]
            methods=methods,
        )
        return fn

    return decorator
