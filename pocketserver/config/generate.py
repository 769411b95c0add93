"""Write a new homeserver.yaml and signing key (``--generate-config``)."""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pocketserver.core.crypto import generate_signing_key, read_signing_keys, write_signing_keys

TEMPLATE = "homeserver.yaml.in"

SAMPLE_VALUES = {
    "SERVER_NAME": "example.com",
    "PUBLIC_BASEURL": "https://example.com/",
    "DATA_DIR": "/var/lib/pocketserver",
    "CONFIG_DIR": "/etc/pocketserver",
    "REGISTRATION_SHARED_SECRET": "null  # --generate-config writes a random secret here",
    "REPORT_STATS": "false",
}


class GenerateError(Exception):
    """The files could not be written (exists already, folder not writable)."""


@dataclass(frozen=True, slots=True)
class Generated:
    config_path: Path
    signing_key_path: Path
    key_reused: bool


def template_text() -> str:
    """The config template shipped inside the package (works inside a .pyz)."""
    return resources.files("pocketserver.config").joinpath(TEMPLATE).read_text(encoding="utf-8")


def render(values: dict[str, str]) -> str:
    """Fill the ``@@NAME@@`` placeholders of the template with ``values``."""
    text = template_text()
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    if "@@" in text:
        raise GenerateError("config template has an unfilled placeholder")
    return text


def sample_config_text() -> str:
    """The text of the repository's sample_config.yaml."""
    return render(SAMPLE_VALUES)


def _yaml_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def new_key_version() -> str:
    """A fresh key version in Synapse's style (``a_`` and four random letters)."""
    alphabet = string.ascii_letters
    return "a_" + "".join(secrets.choice(alphabet) for _ in range(4))


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600, failing if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_new_signing_key(path: Path) -> bool:
    """Write a fresh signing key to ``path`` (mode 0600) unless a file is there.

    Returns:
        True if a key was written, False if the file exists (it is never overwritten).

    Raises:
        GenerateError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(path, write_signing_keys([generate_signing_key(new_key_version())]))
    except FileExistsError:
        return False
    except OSError as e:
        raise GenerateError(f"cannot write {path}: {e.strerror}") from None
    return True


def generate(
    server_name: str,
    config_path: Path,
    data_dir: Path | None = None,
    *,
    report_stats: bool = False,
    public_baseurl: str | None = None,
) -> Generated:
    """Write a commented config with fresh secrets and a signing key.

    The data folder defaults to the config file's folder. An existing signing key
    is kept and reused; an existing config file is never overwritten.

    Raises:
        GenerateError: the config exists already or a file cannot be written.
    """
    config_path = config_path.expanduser().absolute()
    if config_path.exists():
        raise GenerateError(f"{config_path} exists already; not overwriting it")
    config_dir = config_path.parent
    data_dir = (data_dir or config_dir).expanduser().absolute()
    key_path = config_dir / f"{server_name}.signing.key"
    try:
        config_dir.mkdir(parents=True, exist_ok=True)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        reused = key_path.exists()
        if reused:
            try:
                if not read_signing_keys(key_path.read_text(encoding="utf-8")):
                    raise ValueError("no key in the file")
            except ValueError as e:
                raise GenerateError(f"existing signing key {key_path} is not valid: {e}") from None
        else:
            _write_private(key_path, write_signing_keys([generate_signing_key(new_key_version())]))
        text = render(
            {
                "SERVER_NAME": server_name,
                "PUBLIC_BASEURL": public_baseurl or f"https://{server_name}/",
                "DATA_DIR": str(data_dir),
                "CONFIG_DIR": str(config_dir),
                "REGISTRATION_SHARED_SECRET": _yaml_quote(secrets.token_urlsafe(32)),
                "REPORT_STATS": "true" if report_stats else "false",
            }
        )
        _write_private(config_path, text)
    except FileExistsError as e:
        raise GenerateError(f"{e.filename} exists already; not overwriting it") from None
    except OSError as e:
        raise GenerateError(f"cannot write {e.filename or config_path}: {e.strerror}") from None
    return Generated(config_path=config_path, signing_key_path=key_path, key_reused=reused)
