"""User-interactive authentication (client-server API "User-Interactive Authentication API").

An operation (register, change password, delete devices, deactivate) offers one or
more *flows*, each a list of stage types. The first request without ``auth`` gets a
401 with the flows, ``params`` and a new ``session``; each later request names the
session and attempts the next stage of some flow; a failed stage answers 401 again
with ``errcode``/``error`` and keeps the session. When every stage of a flow is
complete the operation runs.

Sessions live in memory only: at most ``max_sessions`` (the oldest is dropped past
that) and each for ``ttl_s`` seconds. A restart forgets them, which only makes a
client start its flow again.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from pocketserver.errors import MatrixError, bad_json

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"

DEFAULT_MAX_SESSIONS = 1000
DEFAULT_TTL_S = 15 * 60.0


@dataclass(slots=True)
class UiaSession:
    """One user-interactive authentication in progress."""

    session_id: str
    operation: str
    user_id: str | None
    expires_at: float
    completed: list[str] = field(default_factory=list)
    registration_token: str | None = None
    """A registration token this session has validated (a reserved, pending use)."""
    request: dict[str, object] = field(default_factory=dict)
    """Request parameters remembered from an earlier request of the session."""
    registered: str | None = None
    """The user ID a completed registration session created: a repeat of the session
    logs that user in again instead of registering another (as Synapse)."""


class StageFailed(Exception):
    """An attempted stage did not succeed; the client may try again in the same session."""

    def __init__(self, errcode: str, error: str) -> None:
        super().__init__(f"{errcode}: {error}")
        self.errcode = errcode
        self.error = error


class AuthRequired(MatrixError):
    """The spec's 401 answer: flows, params, session, completed (and errcode on failure)."""

    def __init__(self, body: dict[str, object], errcode: str | None, error: str | None) -> None:
        super().__init__(401, errcode or "M_UNAUTHORIZED", error or "authentication required")
        self.body = body
        self.failed = errcode is not None

    def to_json(self) -> dict[str, object]:
        if not self.failed:
            return dict(self.body)
        return {"errcode": self.errcode, "error": self.error, **self.body}


StageCheck = Callable[[UiaSession, Mapping[str, object]], Awaitable[None]]
"""Checks one stage's auth dict; raises :class:`StageFailed` (or a plain MatrixError
for a malformed request) and may record what it learnt in the session."""


async def _dummy(session: UiaSession, auth: Mapping[str, object]) -> None:
    return None


class UserInteractiveAuth:
    """The bounded, expiring store of UIA sessions and the stage-ordering rules."""

    def __init__(
        self,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._max = max_sessions
        self._ttl = ttl_s
        self._clock = clock
        self._sessions: OrderedDict[str, UiaSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def live_sessions(self) -> list[UiaSession]:
        self._sweep()
        return list(self._sessions.values())

    def _sweep(self) -> None:
        now = self._clock()
        for sid in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[sid]

    def _new_session(self, operation: str, user_id: str | None) -> UiaSession:
        self._sweep()
        session = UiaSession(
            session_id=secrets.token_urlsafe(18),
            operation=operation,
            user_id=user_id,
            expires_at=self._clock() + self._ttl,
        )
        self._sessions[session.session_id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def get(self, body: Mapping[str, object], operation: str) -> UiaSession | None:
        """The live session of ``operation`` that ``body["auth"]["session"]`` names, if any
        (nothing is checked or changed: for a look before :meth:`authenticate`)."""
        auth = body.get("auth")
        sid = auth.get("session") if isinstance(auth, Mapping) else None
        if not isinstance(sid, str):
            return None
        self._sweep()
        session = self._sessions.get(sid)
        return session if session is not None and session.operation == operation else None

    def finish(self, session: UiaSession) -> None:
        """The operation succeeded: the session is used up."""
        self._sessions.pop(session.session_id, None)

    async def authenticate(
        self,
        operation: str,
        body: Mapping[str, object],
        flows: Sequence[Sequence[str]],
        checks: Mapping[str, StageCheck],
        *,
        user_id: str | None = None,
        params: Mapping[str, object] | None = None,
        remember: Mapping[str, object] | None = None,
    ) -> UiaSession:
        """Run the stage in ``body["auth"]``; return the session once a flow is complete.

        Args:
            operation: What is being authorised; a session serves one operation.
            body: The request body (its ``auth`` dict is read).
            flows: The flows offered, each a list of stage types.
            checks: A check for each stage type other than ``m.login.dummy``.
            user_id: The authenticated requester, if any; a session serves one user.
            params: The ``params`` of the 401 answer.
            remember: Request parameters to keep in the session (if not empty), for
                clients that send them only with their first request.

        Raises:
            AuthRequired: 401, more stages are needed (or the attempted one failed).
            MatrixError: 400 ``M_BAD_JSON`` for a malformed ``auth``, 400 ``M_UNKNOWN``
                for an unknown session, 403 ``M_FORBIDDEN`` for a session of another
                operation or user.
        """
        auth = body.get("auth")
        if auth is not None and not isinstance(auth, Mapping):
            raise bad_json("auth must be an object")
        session = (
            self._new_session(operation, user_id)
            if auth is None
            else self._session_for(auth, operation, user_id)
        )
        if remember:
            session.request.update(remember)
        if auth is None:
            raise self._required(session, flows, params, completed=False)
        stage = auth.get("type")
        if stage is not None and not isinstance(stage, str):
            raise bad_json("auth.type must be a string")
        if stage is not None and stage not in session.completed:
            if not any(s == stage for flow in flows for s in flow):
                raise self._required(
                    session, flows, params, "M_UNRECOGNIZED", f"unknown auth type {stage!r}"
                )
            if not any(self._next_stage(flow, session.completed) == stage for flow in flows):
                raise self._required(
                    session, flows, params, "M_FORBIDDEN", f"{stage} is not the next stage"
                )
            check = checks.get(stage, _dummy if stage == DUMMY else None)
            if check is None:
                raise self._required(
                    session, flows, params, "M_UNRECOGNIZED", f"unsupported auth type {stage!r}"
                )
            try:
                await check(session, auth)
            except StageFailed as e:
                raise self._required(session, flows, params, e.errcode, e.error) from None
            session.completed.append(stage)
        if any(list(flow) == session.completed for flow in flows):
            return session
        raise self._required(session, flows, params)

    def _session_for(
        self, auth: Mapping[str, object], operation: str, user_id: str | None
    ) -> UiaSession:
        sid = auth.get("session")
        if sid is None:
            return self._new_session(operation, user_id)
        if not isinstance(sid, str):
            raise bad_json("auth.session must be a string")
        self._sweep()
        session = self._sessions.get(sid)
        if session is None:
            raise MatrixError(400, "M_UNKNOWN", "unknown or expired authentication session")
        if session.operation != operation or (
            user_id is not None and session.user_id not in (None, user_id)
        ):
            raise MatrixError(
                403, "M_FORBIDDEN", "this authentication session is for another request"
            )
        if session.user_id is None:
            session.user_id = user_id
        return session

    @staticmethod
    def _next_stage(flow: Sequence[str], completed: list[str]) -> str | None:
        if list(flow[: len(completed)]) != completed or len(flow) <= len(completed):
            return None
        return flow[len(completed)]

    @staticmethod
    def _required(
        session: UiaSession,
        flows: Sequence[Sequence[str]],
        params: Mapping[str, object] | None,
        errcode: str | None = None,
        error: str | None = None,
        *,
        completed: bool = True,
    ) -> AuthRequired:
        """The 401 answer. ``completed`` is left out only of the answer to a request
        without ``auth`` (as Synapse); every later answer lists it, even when empty
        (SyTest 14account/02deactivate expects it beside ``errcode`` after a wrong
        password; the spec's AuthenticationResponse lists it as optional)."""
        body: dict[str, object] = {
            "flows": [{"stages": list(flow)} for flow in flows],
            "params": dict(params or {}),
            "session": session.session_id,
        }
        if completed:
            body["completed"] = list(session.completed)
        return AuthRequired(body, errcode, error)
