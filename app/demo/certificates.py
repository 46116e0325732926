"""A private CA and the server certificates it signs: the demo's TLS, and the test rig's.

The service then trusts the demo server the way an operator trusts a server
with a private CA, through `IMAP_CA_FILE`: TLS stays verified, nothing is
switched off for the demo. The demo's live as long as one demo run (a day at
most); the test rig (tests/support/dovecot.py) signs its servers' with the same
authority.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DEMO_VALIDITY = dt.timedelta(days=1)
_CA_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class CertificateAuthority:
    """A self-signed CA that issues server certificates, all valid for `validity`."""

    def __init__(self, common_name: str, validity: dt.timedelta) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self._validity = validity
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        public_key = self.key.public_key()
        self.certificate = (
            self._builder(name, name, public_key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue_server_certificate(
        self, key: ec.EllipticCurvePrivateKey, ip: str, dns_name: str | None = None
    ) -> x509.Certificate:
        """Sign a certificate for `ip` (and `dns_name`, which then is its common name)."""
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name or ip)])
        names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip))]
        if dns_name is not None:
            names.insert(0, x509.DNSName(dns_name))
        return (
            self._builder(subject, self.certificate.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def _builder(
        self, subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        now = dt.datetime.now(dt.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + self._validity)
        )


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class DemoTls:
    """Where the files are: the CA to trust, and the server's certificate and key."""

    ca_file: Path
    server_certificate: Path
    server_key: Path


def write_demo_tls(directory: Path, host: str) -> DemoTls:
    """Write a new CA and a certificate for `host` (an IP address) signed by it."""
    ca = CertificateAuthority("imap-bridge demo CA", _DEMO_VALIDITY)
    server_key = ec.generate_private_key(ec.SECP256R1())
    tls = DemoTls(
        ca_file=directory / "ca.pem",
        server_certificate=directory / "server.pem",
        server_key=directory / "server.key",
    )
    tls.ca_file.write_bytes(certificate_pem(ca.certificate))
    tls.server_certificate.write_bytes(
        certificate_pem(ca.issue_server_certificate(server_key, host))
    )
    tls.server_key.touch(mode=0o600)
    tls.server_key.write_bytes(private_key_pem(server_key))
    return tls
