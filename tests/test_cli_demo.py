"""``demo`` in process: its certificates, its ports and its arguments (the whole command
runs end to end in tests/e2e/test_demo.py)."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path

import pytest

from pocketserver.cli import main
from pocketserver.cli.demo_servers import _ephemeral_floor, choose_ports
from pocketserver.cli.demo_tls import DemoTlsError, make_certificates


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str) -> None:
    """A TLS handshake between two contexts in memory; raises ssl.SSLError on failure."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, side in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def test_the_certificate_verifies_strictly_for_the_ip_and_only_with_the_ca(
    tmp_path: Path,
) -> None:
    certs = make_certificates(tmp_path / "tls", "127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs.certificate, certs.private_key)
    client = ssl.create_default_context(cafile=str(certs.ca))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13
    _handshake(server, client, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, client, "127.0.0.2")  # not the certificate's address
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server, ssl.create_default_context(), "127.0.0.1")  # no demo CA
    assert certs.private_key.stat().st_mode & 0o077 == 0
    assert not (tmp_path / "tls" / "server.csr").exists()


def test_certificates_of_an_earlier_run_are_kept(tmp_path: Path) -> None:
    first = make_certificates(tmp_path, "127.0.0.1")
    pem = first.ca.read_bytes()
    again = make_certificates(tmp_path, "127.0.0.1")
    assert again == first
    assert again.ca.read_bytes() == pem


def test_without_the_openssl_command_the_error_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DemoTlsError, match="openssl"):
        make_certificates(tmp_path / "tls", "127.0.0.1")
    assert not (tmp_path / "tls" / "ca.pem").exists()


def test_ports_from_the_base_or_free_ones_when_one_is_taken() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    ports, asked = choose_ports(base)
    if asked:  # the six ports from base happened to be free
        assert [p.federation for p in ports] == [base, base + 1, base + 2]
        assert [p.client for p in ports] == [base + 3, base + 4, base + 5]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 4))
        taken.listen()
        ports, asked = choose_ports(base)
        assert not asked
        numbers = sorted(n for p in ports for n in (p.federation, p.client))
        assert base + 4 not in numbers
        # Six in a row, below the ports outgoing connections get.
        assert numbers == list(range(numbers[0], numbers[0] + 6))
        assert [p.client - p.federation for p in ports] == [3, 3, 3]
        assert numbers[-1] < _ephemeral_floor()


@pytest.mark.parametrize("value", ["70000", "0", "-1", "eighty"])
def test_a_bad_base_port_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--base-port", value])
    assert exited.value.code == 2
    assert "--base-port" in capsys.readouterr().err


def test_a_kept_dir_whose_ports_are_taken_is_refused_and_nothing_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = [[port, port + 3], [port + 1, port + 4], [port + 2, port + 5]]
        (tmp_path / "demo.json").write_text(json.dumps({"ports": ports}))
        assert main(["demo", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} of server 1" in err
    assert "in use" in err
    assert not (tmp_path / "server1").exists()  # nothing was set up or started
    assert (tmp_path / "demo.json").exists()  # --dir is kept
