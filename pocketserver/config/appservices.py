"""``app_service_config_files`` (Synapse's key): the registration files of the
application services, read and validated at start (pocketserver/appservice/registration.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from pocketserver.appservice.registration import (
    AppService,
    RegistrationError,
    check_registrations,
    parse_registration,
)

MAX_REGISTRATION_BYTES = 1_000_000


def load_registrations(base_dir: Path, server_name: str, value: object) -> tuple[AppService, ...]:
    """Read every registration file named in the list ``value``.

    Raises:
        ValueError: a file cannot be read, is not YAML, or is not a valid registration,
            or two registrations clash (the message names the file and the key).
    """
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of registration file paths")
    found = []
    for name in value:
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_REGISTRATION_BYTES + 1)
        except OSError as e:
            raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
        if len(raw) > MAX_REGISTRATION_BYTES:
            raise ValueError(f"{path} is larger than {MAX_REGISTRATION_BYTES} bytes")
        try:
            data = yaml.safe_load(raw.decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise ValueError(f"{path} is not valid YAML: {e}") from None
        try:
            found.append(parse_registration(data, server_name, str(path)))
        except RegistrationError as e:
            raise ValueError(str(e)) from None
    try:
        check_registrations(found)
    except RegistrationError as e:
        raise ValueError(str(e)) from None
    return tuple(found)
