"""Confirming the user's identity with UIA before a sensitive account operation."""

from __future__ import annotations

import json
from collections.abc import Mapping

from quart import request

from pocketserver.accounts.service import Requester
from pocketserver.accounts.uia import PASSWORD, UiaSession
from pocketserver.api.http import access_token, require_auth, services
from pocketserver.errors import forbidden


async def optional_auth() -> Requester | None:
    """The requester if an access token was sent (it must then be valid), else None."""
    return await require_auth() if access_token() is not None else None


async def confirm_identity(
    operation: str,
    body: Mapping[str, object],
    requester: Requester | None,
    *,
    target: object = None,
) -> UiaSession:
    """UIA with the account's password (``m.login.password``); the session names the user.

    A session serves one request: the same method and path (as Synapse, which answers
    403 "Requested operation has changed during the UI authentication session"), and
    the same ``target`` (what the request acts on, e.g. the devices to delete), so a
    password confirmed for one request cannot authorise another. The spec does not
    say; reusing a session for a different operation would defeat the confirmation.

    Raises:
        AuthRequired: 401 until the password stage is done.
        MatrixError: 403 ``M_FORBIDDEN`` if the account cannot confirm with a password.
    """
    s = services()
    api = s.account_api
    if not s.config.password_enabled or (
        requester is not None and not await api.management.has_password(requester.user_id)
    ):
        raise forbidden("this account has no password to confirm the request with")
    bound = f"{operation} {request.method} {request.path} {json.dumps(target, sort_keys=True)}"
    return await api.uia.authenticate(
        bound,
        body,
        [[PASSWORD]],
        {PASSWORD: api.management.check_password_stage},
        user_id=requester.user_id if requester else None,
    )
