"""Certificates for the local control plane: one CA, a serving certificate per API server
(IP SAN 127.0.0.1), client certificates, and the service-account signing key."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path

    def cert_pem(self) -> bytes:
        return self.cert.read_bytes()

    def key_pem(self) -> bytes:
        return self.key.read_bytes()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write(pair: KeyPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    _write_key(pair.key, key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pair


def _builder(subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey
             ) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


class CertificateAuthority:
    """A throw-away CA for one local environment."""

    def __init__(self, pair: KeyPair) -> None:
        self.pair = pair
        self._cert = x509.load_pem_x509_certificate(pair.cert_pem())
        loaded = serialization.load_pem_private_key(pair.key_pem(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        self._key = loaded

    @classmethod
    def create(cls, directory: Path) -> CertificateAuthority:
        pair = KeyPair(directory / "ca.crt", directory / "ca.key")
        if not pair.cert.exists():
            key = _key()
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hmls-dev-ca")])
            cert = (
                _builder(name, name, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True, key_cert_sign=True, crl_sign=True,
                        content_commitment=False, key_encipherment=False,
                        data_encipherment=False, key_agreement=False,
                        encipher_only=False, decipher_only=False,
                    ),
                    critical=True,
                )
                .sign(key, hashes.SHA256())
            )
            _write(pair, cert, key)
        return cls(pair)

    def serving(self, pair: KeyPair, *, host: str = "127.0.0.1") -> KeyPair:
        key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
        sans: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address(host)),
            x509.DNSName("localhost"),
        ]
        cert = (
            _builder(name, self._cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        return _write(pair, cert, key)

    def client(self, pair: KeyPair, *, user: str, groups: tuple[str, ...] = ()) -> KeyPair:
        key = _key()
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        cert = (
            _builder(x509.Name(attrs), self._cert.subject, key.public_key())
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        return _write(pair, cert, key)


def service_account_keys(directory: Path) -> KeyPair:
    """RSA key pair for --service-account-{key,signing-key}-file (pair.cert is the public key)."""
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    if not pair.key.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pair.key, key)
        pair.cert.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return pair
