"""OpenID tokens: a user vouches for themself to a third party (client-server API
"OpenID", server-server API "OpenID").

``POST /user/{userId}/openid/request_token`` gives a token that lasts an hour; the third
party (a widget, an integration manager) hands it to
``GET /_matrix/federation/v1/openid/userinfo``, which answers the user ID. Tokens are
kept in SQLite as hashes (a restart does not break open widgets), at most
:data:`MAX_PER_USER` live ones per user, expired ones dropped as new ones are made.
"""

from __future__ import annotations

import secrets
import time

from pocketserver.accounts.tokens import hash_token
from pocketserver.errors import MatrixError
from pocketserver.storage import openid as openid_store
from pocketserver.storage import users as user_store
from pocketserver.storage.db import Database

EXPIRES_IN_S = 3600
"""As Synapse (``openid_token_lifetime``): an hour."""
MAX_PER_USER = 50


class OpenIdTokens:
    def __init__(self, db: Database, server_name: str) -> None:
        self._db = db
        self._server_name = server_name

    async def request_token(self, user_id: str) -> dict[str, object]:
        """A new token for ``user_id``: the spec's ``OpenIdCredentials``."""
        token = secrets.token_urlsafe(32)
        now_ms = int(time.time() * 1000)
        await self._db.write(
            openid_store.insert,
            hash_token(token),
            user_id,
            now_ms,
            now_ms + EXPIRES_IN_S * 1000,
            MAX_PER_USER,
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self._server_name,
            "expires_in": EXPIRES_IN_S,
        }

    async def user_for(self, token: str) -> str:
        """The user a token names.

        Raises:
            MatrixError: 401 ``M_UNKNOWN_TOKEN`` for an unknown or expired token, or
                one of a user deactivated since.
        """
        now_ms = int(time.time() * 1000)
        user_id = await self._db.read(openid_store.user_for, hash_token(token), now_ms)
        if user_id is not None:
            user = await self._db.read(user_store.get_user, user_id)
            if user is not None and not user.deactivated:
                return user_id
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access Token unknown or expired")
