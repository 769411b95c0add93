"""TLS for listeners: one server context whose certificate is re-read when its files change.

A certificate renewed by certbot or another ACME client is served without a restart:
:meth:`ListenerTls.run` looks at the certificate and key files every
:data:`CHECK_INTERVAL_S` (their size, modification time and inode: a cheap ``stat``),
and when either changed it loads the pair into the live context, after checking it in
a throw-away context first, so that a half-written or mismatched pair never replaces a
working one (the old certificate stays, with a warning in the log, until the files are
right). New connections get the new certificate; open ones keep theirs. SIGHUP asks
for the same check at once (:meth:`ListenerTls.check_soon`), as Synapse re-reads its
certificate on SIGHUP.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

import trio

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 60.0

_Stamp = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


def _stamp_of(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ListenerTls:
    """The TLS server context of every ``tls: true`` listener, kept up to date.

    Args:
        certificate: ``tls_certificate_path`` (PEM, the full chain).
        private_key: ``tls_private_key_path`` (PEM).
        make_context: Builds an empty server context with the listener's settings
            (protocols, ciphers, ALPN); the certificate is loaded into it here.
        interval_s: How often the files are looked at.

    Raises:
        OSError, ssl.SSLError: the files cannot be read or do not load (at start,
            the server refuses to start; the preflight checks say why first).
    """

    def __init__(
        self,
        certificate: Path,
        private_key: Path,
        make_context: Callable[[], ssl.SSLContext],
        *,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._certificate = certificate
        self._private_key = private_key
        self._make_context = make_context
        self._interval_s = interval_s
        self._stamp = self._stamps()
        self.context = make_context()
        self.context.load_cert_chain(str(certificate), str(private_key))
        self.reloads = 0
        self._wake = trio.Event()

    def _stamps(self) -> _Stamp:
        return (_stamp_of(self._certificate), _stamp_of(self._private_key))

    def check_soon(self) -> None:
        """Look at the files now rather than at the next interval (SIGHUP)."""
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self._interval_s):
                await self._wake.wait()
            self._wake = trio.Event()
            await self.check()

    async def check(self) -> bool:
        """Reload the certificate if its files changed and the new pair loads.

        Returns:
            True if the live context now holds the new certificate.
        """
        stamp = await trio.to_thread.run_sync(self._stamps)
        if stamp == self._stamp:
            return False
        try:
            await trio.to_thread.run_sync(self._try_load)
        except (OSError, ssl.SSLError, ValueError) as e:
            # Often a renewal caught between writing the certificate and the key: the
            # next check (or SIGHUP) loads the pair once both are written.
            log.warning(
                "TLS certificate %s or key %s changed but does not load (%s); still"
                " serving the previous certificate",
                self._certificate,
                self._private_key,
                e,
            )
            return False
        # The live context is only used on this thread (handshakes run in trio's
        # thread), so it is changed here; the pair was just read and checked.
        self.context.load_cert_chain(str(self._certificate), str(self._private_key))
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate %s reloaded", self._certificate)
        return True

    def _try_load(self) -> None:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            str(self._certificate), str(self._private_key)
        )
