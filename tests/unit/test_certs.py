"""Certificate generation (tools/certs.py) and TLS configuration (common/tls.py), no sockets.

Real files in a temp dir, real X.509 parsing (cryptography's, and the ssl module's own
decoder for what a TLS socket reports as the peer's certificate).
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common import tls
from tools import certs


def _load(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_cluster_certs_have_the_layout_roles_and_names_a_tls_peer_needs(tmp_path: Path) -> None:
    made = certs.ensure_cluster_certs(str(tmp_path / "tls"), nodes=[1, 2], routers=[1])
    assert sorted(os.listdir(tmp_path / "tls")) == [
        "ca.key", "ca.pem", "client.key", "client.pem", "node-1.key", "node-1.pem", "node-2.key", "node-2.pem",
        "router-1.key", "router-1.pem",
    ]
    for name in os.listdir(tmp_path / "tls"):
        mode = stat.S_IMODE(os.stat(tmp_path / "tls" / name).st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), (name, oct(mode))
    ca = _load(made.ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    for issued, role, name in [(made.nodes[1], "member", "node-1"), (made.nodes[2], "member", "node-2"),
                               (made.routers[1], "member", "router-1"), (made.client, "client", "client")]:
        cert = _load(issued.cert)
        cert.verify_directly_issued_by(ca)  # raises when the CA did not sign it
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == role
        sans = _sans(cert)
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [f"tessera://{role}/{name}"]
        assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
        assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                                 ipaddress.ip_address("::1")}
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        expected = {ExtendedKeyUsageOID.CLIENT_AUTH}
        if role == "member":
            expected.add(ExtendedKeyUsageOID.SERVER_AUTH)  # only members may serve
        assert usages == expected, name
        # What a TLS socket reports of it (ssl's own decoder): the identity helper reads that.
        decoded = ssl._ssl._test_decode_cert(issued.cert)  # type: ignore[attr-defined]
        assert tls.identity_from_peercert(decoded) == tls.PeerIdentity(role, name)
        # The pair loads as a TlsConfig (the key matches the certificate) and makes contexts.
        config = tls.TlsConfig.load(made.ca, issued.cert, issued.key)
        assert config.client_ssl_context.check_hostname
        assert config.client_ssl_context.verify_mode == ssl.CERT_REQUIRED
        assert config.server_ssl_context.verify_mode == ssl.CERT_REQUIRED


def test_a_second_run_reuses_what_is_there_and_replaces_only_what_is_missing_or_foreign(tmp_path: Path) -> None:
    d = tmp_path / "tls"
    certs.ensure_cluster_certs(str(d), nodes=[1, 2, 3], routers=[1])
    first = _files(d)
    certs.ensure_cluster_certs(str(d), nodes=[1, 2, 3], routers=[1])
    assert _files(d) == first  # byte for byte: a restart keeps every certificate

    # A node added later gets a pair from the same CA; nothing else changes.
    more = certs.ensure_cluster_certs(str(d), nodes=[1, 2, 3, 4], routers=[1])
    now = _files(d)
    assert {k: v for k, v in now.items() if k in first} == first
    _load(more.nodes[4].cert).verify_directly_issued_by(_load(more.ca))

    # A deleted certificate, and one some other CA signed, are made again (by this CA).
    os.unlink(d / "node-2.pem")
    other = certs.ensure_cluster_certs(str(tmp_path / "other"), nodes=[3], routers=[])
    (d / "node-3.pem").write_bytes(Path(other.nodes[3].cert).read_bytes())
    (d / "node-3.key").write_bytes(Path(other.nodes[3].key).read_bytes())
    again = certs.ensure_cluster_certs(str(d), nodes=[1, 2, 3, 4], routers=[1])
    after = _files(d)
    for name in ("node-2.pem", "node-3.pem"):
        _load(str(d / name)).verify_directly_issued_by(_load(again.ca))
    assert after["node-3.pem"] != Path(other.nodes[3].cert).read_bytes()
    unchanged = set(first) - {"node-2.pem", "node-2.key", "node-3.pem", "node-3.key"}
    assert {k: after[k] for k in unchanged} == {k: first[k] for k in unchanged}


def test_a_role_outside_member_and_client_is_refused(tmp_path: Path) -> None:
    ca = certs.ensure_ca(str(tmp_path))
    with pytest.raises(ValueError, match="role must be one of member, client"):
        certs.issue(ca[0], ca[1], "x", "admin")


def test_tls_options_are_all_or_nothing_and_name_what_is_missing_or_bad(tmp_path: Path) -> None:
    made = certs.ensure_cluster_certs(str(tmp_path / "tls"), nodes=[1], routers=[])
    assert tls.from_options(None, None, None) is None  # plaintext
    assert tls.from_options(None, None, None, env={}) is None
    with pytest.raises(tls.TlsConfigError, match="missing --cert, --key"):
        tls.from_options(made.ca, None, None)
    with pytest.raises(tls.TlsConfigError, match=r"\$TESSERA_CA.*missing --key"):
        tls.from_options(made.ca, made.client.cert, None, env={})
    # The environment fills in what the flags leave out (the CLI's rule), flags first.
    env = {tls.CA_ENV: made.ca, tls.CERT_ENV: made.client.cert, tls.KEY_ENV: made.client.key}
    from_env = tls.from_options(None, None, None, env=env)
    assert from_env is not None and from_env.cert_path == made.client.cert
    mixed = tls.from_options(None, made.nodes[1].cert, made.nodes[1].key, env=env)
    assert mixed is not None and (mixed.ca_path, mixed.cert_path) == (made.ca, made.nodes[1].cert)

    with pytest.raises(tls.TlsConfigError, match=f"--ca {tmp_path}/nope.pem: cannot read it"):
        tls.TlsConfig.load(str(tmp_path / "nope.pem"), made.client.cert, made.client.key)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(tls.TlsConfigError, match=r"--cert .*junk\.pem: not a PEM file"):
        tls.TlsConfig.load(made.ca, str(tmp_path / "junk.pem"), made.client.key)
    with pytest.raises(tls.TlsConfigError, match=r"--cert .*client\.pem / --key .*node-1\.key"):
        tls.TlsConfig.load(made.ca, made.client.cert, made.nodes[1].key)  # a key of another certificate


def test_identity_uris_parse_only_tessera_roles() -> None:
    assert tls.parse_identity_uri("tessera://member/node-1") == tls.PeerIdentity("member", "node-1")
    assert tls.parse_identity_uri("tessera://client/app") == tls.PeerIdentity("client", "app")
    assert tls.PeerIdentity("member", "router-2").is_member and not tls.PeerIdentity("client", "c").is_member
    for bad in ("tessera://admin/x", "tessera://member/", "tessera://member", "spiffe://member/x", ""):
        assert tls.parse_identity_uri(bad) is None, bad
    assert tls.identity_from_peercert(None) is None
    assert tls.identity_from_peercert({"subjectAltName": (("DNS", "localhost"),)}) is None


def test_connection_errors_that_look_like_a_tls_mismatch_get_a_hint() -> None:
    closed = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Socket closed"
    assert "--ca, --cert and --key" in tls.mismatch_hint(closed, have_tls=False)
    assert "refused this client's certificate" in tls.mismatch_hint(closed, have_tls=True)
    assert "not signed by the --ca" in tls.mismatch_hint("... CERTIFICATE_VERIFY_FAILED ...", have_tls=True)
    assert "speaks plaintext" in tls.mismatch_hint("... WRONG_VERSION_NUMBER ...", have_tls=True)
    assert tls.mismatch_hint("deadline exceeded", have_tls=True) == ""
    refused = "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:1: Connection refused"
    assert tls.mismatch_hint(refused, have_tls=False) == ""  # nothing listens: no flag helps
