"""Certificates for the testbed's TLS engine h3, made once by `scripts/testbed.sh up`.

    python scripts/testbed_tls.py DIR ENGINE_IP

writes into DIR: ca.pem (the CA), server-cert.pem/server-key.pem (h3's, for ENGINE_IP),
client/{ca,cert,key}.pem (a client certificate, in the layout DOCKER_CERT_PATH expects) and
other-ca.pem (a CA that signed nothing: the wrong CA for tests). Existing files are kept.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough to outlive any testbed; the not-before is set back for clock differences.
VALIDITY = datetime.timedelta(days=3650)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + VALIDITY)
    )


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    common_name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    usage: x509.ObjectIdentifier,
    addresses: list[str],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(common_name, ca[0].subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if addresses:
        names = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca[1], hashes.SHA256()), key


def _write(
    path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None
) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_name(path.name.replace("cert", "key"))
        key_path.touch(mode=0o600)
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def main(folder: Path, engine_ip: str) -> None:
    if (folder / "client" / "key.pem").exists():
        return  # made by an earlier run; h3 may be running with them
    ca = _ca("berth testbed CA")
    _write(folder / "ca.pem", ca[0])
    _write(folder / "client" / "ca.pem", ca[0])
    _write(
        folder / "server-cert.pem",
        *_leaf("h3", ca, ExtendedKeyUsageOID.SERVER_AUTH, [engine_ip, "127.0.0.1"]),
    )
    _write(folder / "other-ca.pem", _ca("berth testbed other CA")[0])
    # Written last: its presence means the set is complete.
    _write(folder / "client" / "cert.pem", *_leaf("berth", ca, ExtendedKeyUsageOID.CLIENT_AUTH, []))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
