"""A real Matrix client library (matrix-nio, from PyPI) against the real server."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import nio

from tests.harness import RunningServer


def _register_user_cli(server: RunningServer, user: str, password: str) -> None:
    """The real `register-user` command against the running server."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pocketserver",
            "register-user",
            "-c",
            str(server.config_path),
            "-u",
            user,
            "-p",
            password,
            "--no-admin",
            server.base_url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"@{user}:{server.server_name}" in proc.stdout


def test_nio_login_whoami_logout(server: RunningServer) -> None:
    _register_user_cli(server, "niouser", "nio password")

    async def scenario() -> None:
        client = nio.AsyncClient(server.base_url, "@niouser:" + server.server_name)
        try:
            resp = await client.login("nio password", device_name="nio test device")
            assert isinstance(resp, nio.LoginResponse), resp
            assert resp.user_id == "@niouser:" + server.server_name
            assert client.access_token
            who = await client.whoami()
            assert isinstance(who, nio.WhoamiResponse), who
            assert who.user_id == resp.user_id
            assert who.device_id == resp.device_id
            out = await client.logout()
            assert isinstance(out, nio.LogoutResponse), out
            client.access_token = resp.access_token
            after = await client.whoami()
            assert isinstance(after, nio.WhoamiError)
            assert after.status_code == "M_UNKNOWN_TOKEN"
            bad = await client.login("wrong password")
            assert isinstance(bad, nio.LoginError)
            assert bad.status_code == "M_FORBIDDEN"
        finally:
            await client.close()

    asyncio.run(scenario())
