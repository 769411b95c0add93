"""Registering a client-server route under every prefix clients use."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from quart import Blueprint

F = TypeVar("F", bound=Callable[..., object])

CLIENT_PREFIXES = ("/_matrix/client/v3", "/_matrix/client/r0")
"""v3 is current; r0 is the pre-v1.1 name that older bots and SDKs still call."""

_PREFIX_ARG = "_client_prefix"
_VERSIONS = ", ".join(prefix.rsplit("/", 1)[1] for prefix in CLIENT_PREFIXES)
_CLIENT_PREFIX_RULE = f"/_matrix/client/<any({_VERSIONS}):{_PREFIX_ARG}>"
"""Both prefixes in one rule: each Werkzeug rule costs about 8 KB (regexes, a compiled
URL builder), so one rule per route instead of two keeps about 1 MB off the idle RSS."""


def _drop_prefix_arg(endpoint: str | None, values: dict[str, object] | None) -> None:
    """The views do not take the prefix: drop it before they are called."""
    if values:
        values.pop(_PREFIX_ARG, None)


UNSTABLE_PREFIX = "/_matrix/client/unstable"


def client_route(
    bp: Blueprint, path: str, *, methods: list[str], unstable: bool = False
) -> Callable[[F], F]:
    """Register the decorated view at ``path`` under each client API prefix.

    ``unstable`` also serves it under ``/_matrix/client/unstable``, the path of the MSC
    it came from, for endpoints whose unstable path clients and SyTest still call
    (as Synapse serves them)."""
    if _drop_prefix_arg not in bp.url_value_preprocessors[None]:
        bp.url_value_preprocessor(_drop_prefix_arg)

    def decorator(fn: F) -> F:
        bp.add_url_rule(
            _CLIENT_PREFIX_RULE + path,
            endpoint=f"{fn.__name__}_client",
            view_func=fn,  # type: ignore[arg-type]
            methods=methods,
        )
        if unstable:
            bp.add_url_rule(
                UNSTABLE_PREFIX + path,
                endpoint=f"{fn.__name__}_client_unstable",
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
