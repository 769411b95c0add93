"""A throw-away certificate authority for ``demo``, made with the ``openssl`` command.

Why the ``openssl`` command and not the ``cryptography`` package: the demo is the only
place that makes certificates, and ``cryptography`` as a dependency of pocket.pyz would
add ~10 MB unpacked (on SD cards, for every build kept in ``~/.shiv``) and, where PyPI has
no wheel (OpenBSD, 32-bit Pi OS), a Rust toolchain to build it; the ``openssl`` command is
in OpenBSD's base system (LibreSSL) and installed on Debian and Raspberry Pi OS. Only
commands and options common to OpenSSL 1.1.1, 3.x and LibreSSL are used (``ecparam``,
``req -x509``, ``x509 -req -extfile``), with a config file of our own, so the system's
openssl.cnf does not matter.

The certificates carry what Python's strict verification (``VERIFY_X509_STRICT``, on by
default since 3.13) asks for: a critical ``basicConstraints`` and ``keyUsage`` on the CA,
subject and authority key identifiers.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

VALID_DAYS = 365

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = pocketserver demo

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:{ip}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


class DemoTlsError(Exception):
    """The certificates could not be made; the message says why."""


@dataclass(frozen=True)
class DemoCertificates:
    ca: Path
    """The CA certificate (PEM) that every demo server trusts for federation."""
    certificate: Path
    """The servers' certificate (PEM), for ``ip``."""
    private_key: Path


def make_certificates(directory: Path, ip: str) -> DemoCertificates:
    """A new CA in ``directory`` and one certificate it issued for the IP address ``ip``
    (the demo servers share it: they differ only by port). Files that exist already
    from an earlier run of the demo are kept.

    Raises:
        DemoTlsError: no ``openssl`` command, or it failed.
    """
    made = DemoCertificates(
        directory / "ca.pem", directory / "server.pem", directory / "server.key"
    )
    if made.ca.exists() and made.certificate.exists() and made.private_key.exists():
        return made
    openssl = shutil.which("openssl")
    if openssl is None:
        raise DemoTlsError(
            "the demo makes its TLS certificates with the openssl command, which is not "
            "installed (Debian/Raspberry Pi OS: apt install openssl)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG.format(ip=ip))
    ca_key = directory / "ca.key"
    csr = directory / "server.csr"
    days = str(VALID_DAYS)
    ca_subject = "/CN=pocketserver demo CA"
    serial = str(secrets.randbits(63))
    # -subj, -config, -extensions and -extfile are understood alike by OpenSSL and LibreSSL.
    steps = [
        ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key)],
        ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(made.private_key)],
        [
            *("req", "-x509", "-new", "-sha256", "-days", days, "-key", str(ca_key)),
            *("-subj", ca_subject, "-config", str(config), "-extensions", "ca"),
            *("-out", str(made.ca)),
        ],
        [
            *("req", "-new", "-sha256", "-key", str(made.private_key), "-subj", f"/CN={ip}"),
            *("-config", str(config), "-out", str(csr)),
        ],
        [
            *("x509", "-req", "-sha256", "-days", days, "-in", str(csr), "-CA", str(made.ca)),
            *("-CAkey", str(ca_key), "-set_serial", serial, "-extfile", str(config)),
            *("-extensions", "leaf", "-out", str(made.certificate)),
        ],
    ]
    for step in steps:
        done = subprocess.run([openssl, *step], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DemoTlsError(f"openssl {step[0]} failed: {done.stderr.strip()}")
    ca_key.chmod(0o600)
    made.private_key.chmod(0o600)
    csr.unlink()
    return made
