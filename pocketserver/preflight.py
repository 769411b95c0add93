"""Checks of the files a config names, made before the server starts and by ``check-config``.

Each problem is one line that names the file (and, for permissions, the user), so
that a mistake made when installing (a data folder owned by root, a certificate
path with a typo) stops the start instead of surfacing later as errors on every
write or on the first TLS handshake.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from pocketserver.config.model import Config
from pocketserver.core.crypto import read_signing_keys


def current_user() -> str:
    """The name of the user this process runs as (``uid N`` if it has none)."""
    uid = os.geteuid()
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def _readable(label: str, path: Path) -> str | None:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        return f"{label} {path} does not exist"
    except IsADirectoryError:
        return f"{label} {path} is a folder, not a file"
    except OSError as e:
        return f"cannot read {label} {path} as user {current_user()}: {e.strerror}"
    return None


def signing_key_problem(config: Config) -> str | None:
    """Why the signing key cannot be used, or None."""
    path = config.signing_key_path
    problem = _readable("signing key", path)
    if problem is not None:
        if "does not exist" in problem:
            problem += " (`pocket.pyz --generate-keys -c CONFIG` writes a new one)"
        return problem
    try:
        keys = read_signing_keys(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return f"signing key {path} is not valid: {e}"
    return None if keys else f"signing key file {path} holds no key"


def tls_problems(config: Config) -> list[str]:
    """Why a TLS listener's certificate or key cannot be used (nothing if no listener has TLS)."""
    if not any(listener.tls for listener in config.listeners):
        return []
    cert, key = config.tls_certificate_path, config.tls_private_key_path
    # The loader requires both with tls: true.
    assert cert is not None
    assert key is not None
    problems = [
        p
        for p in (_readable("TLS certificate", cert), _readable("TLS private key", key))
        if p is not None
    ]
    if problems:
        return problems
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as e:
        return [f"TLS certificate {cert} with key {key} does not load: {e}"]
    return []


def federation_ca_problems(config: Config) -> list[str]:
    """Why a ``federation_custom_ca_list`` file cannot be used as a CA (PEM)."""
    problems: list[str] = []
    for path in config.federation_custom_ca_list:
        problem = _readable("federation CA file", path)
        if problem is None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
            except (ssl.SSLError, ValueError) as e:
                problem = f"federation CA file {path} does not load: {e}"
        if problem is not None:
            problems.append(problem)
    return problems


def _folder_problem(label: str, folder: Path) -> str | None:
    """A folder the server must create files in: it, or the nearest existing parent that
    it will be created in, must be writable and searchable."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{label} {folder} is not a folder"
    if os.access(probe, os.W_OK | os.X_OK):
        return None
    user = current_user()
    fix = "give that user the folder (chown) or run as its owner"
    if probe == folder:
        return f"{label} {folder} is not writable by user {user}: {fix}"
    return f"{label} {folder} cannot be created: {probe} is not writable by user {user}: {fix}"


def write_problems(config: Config) -> list[str]:
    """Database and media paths this process could not write."""
    problems: list[str] = []
    db = config.database.path
    folder_problem = _folder_problem("database folder", db.parent)
    if folder_problem is not None:
        problems.append(folder_problem)
    else:
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            if path.exists() and not os.access(path, os.R_OK | os.W_OK):
                problems.append(
                    f"database file {path} is not writable by user {current_user()}: "
                    "give that user the file (chown) or run as its owner"
                )
    if config.media.enable_media_repo:
        media_problem = _folder_problem("media folder", config.media_store_path)
        if media_problem is not None:
            problems.append(media_problem)
    return problems


def startup_problems(config: Config) -> list[str]:
    """Everything that would stop the server, in the order it would matter."""
    key = signing_key_problem(config)
    return [
        *([key] if key else []),
        *tls_problems(config),
        *federation_ca_problems(config),
        *write_problems(config),
    ]
