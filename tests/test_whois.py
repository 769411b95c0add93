"""whois in process: a server name with a port is still this server's."""

from __future__ import annotations

from pathlib import Path

import pytest

from pocketserver.accounts.whois import whois
from pocketserver.config import load_config
from pocketserver.errors import MatrixError
from pocketserver.services import build_services
from tests.harness import make_config


@pytest.mark.parametrize(
    ("target", "status"),
    [("@nobody:localhost:8448", 404), ("@nobody:localhost", 400), ("@nobody:8448", 400)],
)
async def test_local_users_by_full_server_name(tmp_path: Path, target: str, status: int) -> None:
    services = await build_services(load_config(make_config(tmp_path, "localhost:8448")))
    try:
        with pytest.raises(MatrixError) as e:
            await whois(services.db, services.account_api.devices, "localhost:8448", target, target)
        assert e.value.status == status
    finally:
        services.db.close()
