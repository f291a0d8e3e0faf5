"""A cluster's certificates: one CA, and a certificate per process (``cluster up --tls``).

Made with the ``cryptography`` package (docs/security.md says why not ``openssl``: no
subprocess, no config file, the same code on every platform, and unit-testable). Keys are
ECDSA P-256: small, fast to make (a whole cluster's set in milliseconds) and accepted by
every TLS stack involved (gRPC's BoringSSL, Python's OpenSSL).

Every leaf certificate says *who* and *what* it is, for the auth layer that comes next
(it authorizes by the mTLS identity, see :mod:`common.tls`):

- subject ``CN=<name>, OU=<role>, O=tessera``; role is ``member`` (a node or router: it may
  carry Raft traffic and speak to placement as a store) or ``client`` (the CLI, apps);
- a URI SAN ``tessera://<role>/<name>`` (the form :func:`common.tls.peer_identity` reads);
- DNS ``localhost`` and IP ``127.0.0.1`` and ``::1`` SANs (plus any ``hosts`` asked for), so a
  channel to ``127.0.0.1:PORT`` verifies its server's name without overrides.

Members get both the serverAuth and clientAuth key usages (they serve, and they dial each
other); clients only clientAuth, so a client's certificate cannot serve as a node.

Layout of a directory made by :func:`ensure_cluster_certs` (keys are mode 0600)::

    ca.pem, ca.key                  the cluster CA (ca.key signs a node added later)
    node-N.pem, node-N.key          node N (store id N)
    router-N.pem, router-N.key      router N
    client.pem, client.key          for the CLI and clients (role client)

Running it again on the same directory keeps whatever is there and still valid (signed by
that CA, not expiring within a day, the same name and role) and makes only what is missing.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.tls import ROLE_CLIENT, ROLE_MEMBER, ROLES, identity_uri

ORGANIZATION = "tessera"
CA_VALID_DAYS = 3650
LEAF_VALID_DAYS = 825  # the longest a public TLS leaf may live; plenty for a dev cluster
RENEW_BEFORE = datetime.timedelta(days=1)
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
TLS_DIR = "tls"  # under a cluster's data dir


@dataclass(frozen=True)
class Issued:
    """Where one process's certificate and key are (paths, as --cert/--key take them)."""

    cert: str
    key: str


@dataclass(frozen=True)
class ClusterCerts:
    """What :func:`ensure_cluster_certs` made or found: the CA and every process's pair."""

    directory: str
    ca: str
    nodes: dict[int, Issued]
    routers: dict[int, Issued]
    client: Issued


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: str, data: bytes, *, secret: bool = False) -> None:
    """Write ``data`` to ``path`` whole (a temporary file renamed over it), keys 0600."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(tmp, path)


def make_ca(common_name: str = "tessera cluster CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA certificate that may sign leaves only (path length 0)."""
    key = _new_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    name: str,
    role: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf for process ``name`` with ``role`` (member or client), signed by the CA."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    key = _new_key()
    now = _now()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == ROLE_MEMBER:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity_uri(role, name)),
                                         *_san_entries(hosts)]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_pair(directory: str, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    """Write ``stem.pem`` and ``stem.key`` (0600) under ``directory``."""
    issued = Issued(os.path.join(directory, f"{stem}.pem"), os.path.join(directory, f"{stem}.key"))
    _write(issued.key, _key_pem(key), secret=True)
    _write(issued.cert, cert.public_bytes(serialization.Encoding.PEM))
    return issued


def _load_ca(directory: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert_path, key_path = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return None
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path} is not an EC private key")
    if cert.public_key() != key.public_key():
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    if cert.not_valid_after_utc - RENEW_BEFORE < _now():
        raise ValueError(f"the cluster CA {cert_path} has expired (or does within a day); move {directory} "
                         "away to make a new one (every process then gets a new certificate)")
    return cert, key


def _still_good(issued: Issued, ca: x509.Certificate, name: str, role: str) -> bool:
    """The pair at ``issued`` exists, was signed by ``ca``, names ``name``/``role`` and lives on."""
    try:
        with open(issued.cert, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(issued.key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except x509.ExtensionNotFound:
        return False
    return (
        cert.public_key() == key.public_key()
        and identity_uri(role, name) in uris
        and cert.not_valid_after_utc - RENEW_BEFORE > _now()
    )


def ensure_pair(
    directory: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    stem: str,
    role: str,
    hosts: Sequence[str] = DEFAULT_HOSTS,
) -> Issued:
    """``stem.pem``/``stem.key`` in ``directory``: the ones there when still good, else new."""
    issued = Issued(os.path.join(directory, f"{stem}.pem"), os.path.join(directory, f"{stem}.key"))
    if _still_good(issued, ca[0], stem, role):
        return issued
    cert, key = issue(ca[0], ca[1], stem, role, hosts)
    return write_pair(directory, stem, cert, key)


def ensure_ca(directory: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA in ``directory`` (made, with the directory, when there is none)."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    found = _load_ca(directory)
    if found is not None:
        return found
    cert, key = make_ca()
    _write(os.path.join(directory, "ca.key"), _key_pem(key), secret=True)
    _write(os.path.join(directory, "ca.pem"), cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def ensure_cluster_certs(
    directory: str, nodes: Iterable[int], routers: Iterable[int], hosts: Sequence[str] = DEFAULT_HOSTS
) -> ClusterCerts:
    """The CA, ``node-N`` and ``router-N`` member pairs and the ``client`` pair in ``directory``,
    reusing what is already there and good (see the module docstring)."""
    ca = ensure_ca(directory)
    return ClusterCerts(
        directory=directory,
        ca=os.path.join(directory, "ca.pem"),
        nodes={i: ensure_pair(directory, ca, f"node-{i}", ROLE_MEMBER, hosts) for i in nodes},
        routers={i: ensure_pair(directory, ca, f"router-{i}", ROLE_MEMBER, hosts) for i in routers},
        client=ensure_pair(directory, ca, "client", ROLE_CLIENT, hosts),
    )
