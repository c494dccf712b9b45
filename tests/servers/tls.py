"""A throw-away PKI for the test servers: one CA and one server certificate for 127.0.0.1.

Every server the tests start (Keystone, the OpenID provider, the fake API server) speaks TLS
with a certificate from here, so the client code is exercised with a private CA exactly as
users run it with CloudVenetoCAs.pem. A second, unrelated PKI (another ``name``) gives a CA
that does NOT sign the servers' certificates, for "untrusted certificate" tests.
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

# Certificates start an hour in the past so that a clock a little behind ours still accepts them,
# and last a day: far longer than any test session.
_SKEW = dt.timedelta(hours=1)
_LIFETIME = dt.timedelta(days=1)


@dataclass(frozen=True)
class PKI:
    """Paths of the PEM files written by :func:`make_pki`."""

    directory: Path
    name: str
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: generated in microseconds (RSA takes tens of ms) and accepted by Python's ssl,
    # requests/urllib3, and Go (kubectl).
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: str | Path, name: str = "test") -> PKI:
    """Write a fresh CA and a server certificate for 127.0.0.1/localhost into ``directory``.

    Files are prefixed with ``name`` so several unrelated PKIs can share a directory.
    Existing files are overwritten.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    not_before, not_after = now - _SKEW, now + _LIFETIME

    ca_key = _new_key()
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kubectl-caas tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"kubectl-caas {name} CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = _new_key()
    # Key identifiers and a critical KeyUsage keep newer Pythons' strict X.509 checking happy
    # (VERIFY_X509_STRICT is on by default from Python 3.13).
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pki = PKI(
        directory=directory,
        name=name,
        ca_cert=directory / f"{name}-ca.pem",
        ca_key=directory / f"{name}-ca-key.pem",
        server_cert=directory / f"{name}-server.pem",
        server_key=directory / f"{name}-server-key.pem",
    )
    _write_cert(pki.ca_cert, ca_cert)
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.server_cert, server_cert)
    _write_key(pki.server_key, server_key)
    return pki


def make_untrusted_ca(directory: str | Path) -> Path:
    """Path of a CA certificate that signed none of the servers' certificates."""
    return make_pki(directory, name="untrusted").ca_cert
