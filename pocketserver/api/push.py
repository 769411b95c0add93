"""Push rules and notifications (client-server API "Push Notifications").

Spec: data/api/client-server/pushrules.yaml, notifications.yaml. A scope other than
``global`` or an unknown kind is 400 ``M_INVALID_PARAM``; server-default rules can
be read, enabled or disabled and given other actions, but not replaced or deleted.
"""

from __future__ import annotations

import trio
from quart import Blueprint, request

from pocketserver.api.http import json_body, require_auth, services
from pocketserver.api.routes import client_route
from pocketserver.errors import MatrixError, bad_json, missing_param
from pocketserver.push.rules import check_kind

bp = Blueprint("push", __name__)


async def _rule_owner(scope: str, kind: str) -> str:
    """Authenticate and check the path's scope and kind; the rule owner's user ID."""
    requester = await require_auth()
    check_kind(scope, kind)
    return requester.user_id


async def _required(field: str) -> object:
    """The JSON body's ``field``: 400 ``M_MISSING_PARAM`` without it."""
    body = await json_body()
    if field not in body:
        raise missing_param(field)
    return body[field]


@client_route(bp, "/pushrules/", methods=["GET"])
async def get_all_rules() -> dict[str, object]:
    requester = await require_auth()
    return {"global": await services().push.rules.ruleset(requester.user_id)}


@client_route(bp, "/pushrules", methods=["GET", "PUT", "DELETE", "POST"])
async def no_trailing_slash() -> dict[str, object]:
    """``/pushrules`` without its slash: 404, as Synapse (not a redirect to it)."""
    await trio.lowlevel.checkpoint()
    raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")


@client_route(bp, "/pushrules/<scope>/", methods=["GET"])
async def get_scope_rules(scope: str) -> dict[str, object]:
    requester = await require_auth()
    if scope != "global":
        raise MatrixError(400, "M_INVALID_PARAM", "the only push rule scope is 'global'")
    rules = await services().push.rules.ruleset(requester.user_id)
    return dict(rules)


@client_route(bp, "/pushrules/<scope>/<kind>/", methods=["GET"])
async def get_kind_rules(scope: str, kind: str) -> list[object]:
    user_id = await _rule_owner(scope, kind)
    rules = await services().push.rules.ruleset(user_id)
    return list(rules.get(kind, []))


_ALL = ["GET", "PUT", "DELETE", "POST"]
_WRITES = ["PUT", "DELETE", "POST"]


@client_route(bp, "/pushrules/", methods=_WRITES)
@client_route(bp, "/pushrules/<scope>", methods=_ALL)
@client_route(bp, "/pushrules/<scope>/", methods=_WRITES)
@client_route(bp, "/pushrules/<scope>/<kind>", methods=_ALL)
@client_route(bp, "/pushrules/<scope>/<kind>/", methods=_WRITES)
@client_route(bp, "/pushrules/<path:path>", methods=_ALL)
async def unrecognised_path(**_: str) -> dict[str, object]:
    """Any other path under ``/pushrules/`` (a scope or kind without its trailing slash,
    an empty rule ID, an unknown attribute): 400 ``M_UNRECOGNIZED``, as Synapse answers
    (its SyTest suite checks it). ``/pushrules`` without the slash is 404."""
    await require_auth()
    raise MatrixError(400, "M_UNRECOGNIZED", "unrecognised push rules path")


@client_route(bp, "/pushrules/<scope>/<kind>/<rule_id>", methods=["GET"])
async def get_rule(scope: str, kind: str, rule_id: str) -> dict[str, object]:
    user_id = await _rule_owner(scope, kind)
    rule = await services().push.rules.get_rule(user_id, kind, rule_id)
    return rule.to_json()


@client_route(bp, "/pushrules/<scope>/<kind>/<rule_id>", methods=["PUT"])
async def put_rule(scope: str, kind: str, rule_id: str) -> dict[str, object]:
    user_id = await _rule_owner(scope, kind)
    await _required("actions")
    await services().push.rules.put_rule(
        user_id,
        kind,
        rule_id,
        await json_body(),
        before=request.args.get("before"),
        after=request.args.get("after"),
    )
    return {}


@client_route(bp, "/pushrules/<scope>/<kind>/<rule_id>", methods=["DELETE"])
async def delete_rule(scope: str, kind: str, rule_id: str) -> dict[str, object]:
    user_id = await _rule_owner(scope, kind)
    await services().push.rules.delete_rule(user_id, kind, rule_id)
    return {}


@client_route(bp, "/pushrules/<scope>/<kind>/<rule_id>/enabled", methods=["GET"])
async def get_enabled(scope: str, kind: str, rule_id: str) -> dict[str, object]:
    user_id = await _rule_owner(scope, kind)
    rule = await services().push.rules.get_rule(user_id, kind, rule_id)
    return {"enabled": rule.enabled}


@client_route(bp, "/pushrules/<scope>/<kind>/<rule_id>/enabled", methods=["PUT"])
async def put_enabled(scope: str, kind: str, rule_id: str) -> dict[str, object]:
    user_id = await _rule_owner(scope, kind)
    enabled = await _required("enabled")
    if not isinstance(enabled, bool):
        raise bad_json("enabled must be true or false")
    await services().push.rules.set_enabled(user_id, kind, rule_id, enabled)
    return {}


@client_route(bp, "/pushrules/<scope>/<kind>/<rule_id>/actions", methods=["GET"])
async def get_actions(scope: str, kind: str, rule_id: str) -> dict[str, object]:
    user_id = await _rule_owner(scope, kind)
    rule = await services().push.rules.get_rule(user_id, kind, rule_id)
    return {"actions": list(rule.actions)}


@client_route(bp, "/pushrules/<scope>/<kind>/<rule_id>/actions", methods=["PUT"])
async def put_actions(scope: str, kind: str, rule_id: str) -> dict[str, object]:
    user_id = await _rule_owner(scope, kind)
    actions = await _required("actions")
    await services().push.rules.set_actions(user_id, kind, rule_id, actions)
    return {}


@client_route(bp, "/notifications", methods=["GET"])
async def notifications() -> dict[str, object]:
    requester = await require_auth()
    raw_limit = request.args.get("limit")
    limit = None
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer") from None
        if limit < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
    return await services().push.notifications(
        requester.user_id, request.args.get("from"), limit, request.args.get("only")
    )
