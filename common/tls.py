"""Transport security: one ``TlsConfig`` (CA, certificate, key) for every listener and dialer.

Why one module: a process makes gRPC servers (KV, Meta, Raft transport), gRPC channels (to
routers, to peer nodes, to nodes as a client) and the plain-TCP Raft wire (D23). With TLS they
all use the same three files, so they are read once, here, and every place that listens or
dials asks this module for the credentials (or, without TLS, gets the plaintext call it made
before: the choice is made per connection, never per message, so plaintext costs the same as
before this module existed).

The rules (docs/security.md):

- TLS is mutual everywhere: a server demands a client certificate signed by the cluster CA
  (``require_client_auth=True`` on gRPC, ``CERT_REQUIRED`` on the TCP wire), and a dialer
  verifies the server's certificate against the same CA, host name included (certificates carry
  IP SANs for 127.0.0.1 and ::1, so ``127.0.0.1:PORT`` verifies as it is).
- Each certificate names its holder's role, ``member`` (node, router) or ``client``, as a URI
  SAN ``tessera://ROLE/NAME`` (and OU=ROLE in the subject); :func:`peer_identity` reads it from
  a gRPC call's verified certificate, :func:`identity_from_peercert` from a TLS socket's, for the
  authorization layer that builds on this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Imported where used: tools/cli.py reads this module's names while parsing, and
    # `tessera --help` stays free of gRPC (and ssl) that way.
    import ssl

    import grpc

ROLE_MEMBER = "member"
ROLE_CLIENT = "client"
ROLES = (ROLE_MEMBER, ROLE_CLIENT)
URI_PREFIX = "tessera://"

CA_ENV = "TESSERA_CA"
CERT_ENV = "TESSERA_CERT"
KEY_ENV = "TESSERA_KEY"

HANDSHAKE_TIMEOUT_S = 10.0  # the TCP wire's TLS handshake (asyncio's default is 60 s)

PLAINTEXT_WARNING = "plaintext: no TLS (for local development only; give --ca, --cert and --key to secure it)"


class TlsConfigError(ValueError):
    """A --ca/--cert/--key set that cannot be used; the message names the flag or file."""


def identity_uri(role: str, name: str) -> str:
    """The URI SAN that names a certificate's holder: ``tessera://member/node-1``."""
    return f"{URI_PREFIX}{role}/{name}"


@dataclass(frozen=True)
class PeerIdentity:
    """Who is at the other end of a verified mTLS connection."""

    role: str  # ROLE_MEMBER or ROLE_CLIENT
    name: str  # node-1, router-2, client, ...

    @property
    def is_member(self) -> bool:
        return self.role == ROLE_MEMBER


def parse_identity_uri(uri: str) -> PeerIdentity | None:
    """``tessera://ROLE/NAME`` -> PeerIdentity; None for any other URI."""
    if not uri.startswith(URI_PREFIX):
        return None
    role, sep, name = uri[len(URI_PREFIX):].partition("/")
    if not sep or role not in ROLES or not name:
        return None
    return PeerIdentity(role, name)


def peer_identity(context: grpc.aio.ServicerContext[Any, Any] | grpc.ServicerContext) -> PeerIdentity | None:
    """The identity in the verified client certificate of a gRPC call, or None on a plaintext
    call or a certificate without a ``tessera://`` URI SAN.

    gRPC lists every SAN of the peer's certificate under ``x509_subject_alternative_name``
    (and only after verifying it against the server's CA, which ``require_client_auth`` makes
    mandatory).
    """
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    for raw in auth.get("x509_subject_alternative_name", ()):
        if not isinstance(raw, bytes):
            continue
        found = parse_identity_uri(raw.decode(errors="replace"))
        if found is not None:
            return found
    return None


def identity_from_peercert(peercert: Mapping[str, Any] | None) -> PeerIdentity | None:
    """The identity in a verified certificate as ``ssl.SSLSocket.getpeercert()`` returns it."""
    if not peercert:
        return None
    for kind, value in peercert.get("subjectAltName", ()):
        if kind == "URI":
            found = parse_identity_uri(value)
            if found is not None:
                return found
    return None


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TlsConfigError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TlsConfigError(f"{flag} {path}: not a PEM file")
    return data


@dataclass(frozen=True)
class TlsConfig:
    """The cluster CA and this process's certificate and key, read once from their files.

    Credentials and SSL contexts are made on first use and kept (one object per process,
    shared by every channel and listener).
    """

    ca_path: str
    cert_path: str
    key_path: str
    ca: bytes = field(repr=False)
    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)

    @classmethod
    def load(cls, ca: str, cert: str, key: str) -> TlsConfig:
        """Read the three PEM files; TlsConfigError naming the flag and file when one is bad.
        The certificate and key are tried together at once, so a mismatch fails here, at
        start, not at the first connection."""
        import ssl

        config = cls(ca, cert, key, _read(ca, "--ca"), _read(cert, "--cert"), _read(key, "--key"))
        try:
            config.client_ssl_context  # noqa: B018 - loads and checks the chain and the key
        except ssl.SSLError as exc:
            raise TlsConfigError(f"--cert {cert} / --key {key} / --ca {ca}: {exc.reason or exc}") from None
        return config

    # -- gRPC -------------------------------------------------------------------------------

    @cached_property
    def server_credentials(self) -> grpc.ServerCredentials:
        """Server side of mutual TLS: a client without a certificate the CA signed is refused."""
        import grpc

        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True
        )

    @cached_property
    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client side: verify the server against the CA, present our own certificate."""
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    # -- the TCP wire (node.tcp_transport) -------------------------------------------------

    def _context(self, server_side: bool) -> ssl.SSLContext:
        import ssl

        purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
        ctx = ssl.create_default_context(purpose, cadata=self.ca.decode("ascii"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_path, self.key_path)
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    @cached_property
    def server_ssl_context(self) -> ssl.SSLContext:
        """For a TLS listener: demands a client certificate signed by the CA."""
        return self._context(server_side=True)

    @cached_property
    def client_ssl_context(self) -> ssl.SSLContext:
        """For a TLS dialer: verifies the server (CA and host name) and presents our certificate."""
        ctx = self._context(server_side=False)
        ctx.check_hostname = True
        return ctx


def from_options(
    ca: str | None, cert: str | None, key: str | None, env: Mapping[str, str] | None = None
) -> TlsConfig | None:
    """The TlsConfig the --ca/--cert/--key flags ask for, each falling back to its $TESSERA_*
    variable when ``env`` is given (the CLI's rule; servers pass no env). None when none of the
    three is set: plaintext. TlsConfigError when only some are, or a file is unusable."""
    if env is not None:
        ca = ca or env.get(CA_ENV) or None
        cert = cert or env.get(CERT_ENV) or None
        key = key or env.get(KEY_ENV) or None
    given = {"--ca": ca, "--cert": cert, "--key": key}
    if not any(given.values()):
        return None
    missing = [flag for flag, value in given.items() if not value]
    if missing:
        where = f" (or ${CA_ENV}, ${CERT_ENV}, ${KEY_ENV})" if env is not None else ""
        raise TlsConfigError(f"TLS needs --ca, --cert and --key together{where}; missing {', '.join(missing)}")
    assert ca and cert and key
    return TlsConfig.load(ca, cert, key)


def from_args(args: object, env: Mapping[str, str] | None = None) -> TlsConfig | None:
    """:func:`from_options` on a parsed command line's ``tls_ca``, ``tls_cert``, ``tls_key``
    (the dests of tools/cli.py's --ca, --cert, --key; absent ones count as not given)."""
    return from_options(getattr(args, "tls_ca", None), getattr(args, "tls_cert", None),
                        getattr(args, "tls_key", None), env)


def from_environment() -> TlsConfig | None:
    """The TlsConfig $TESSERA_CA/$TESSERA_CERT/$TESSERA_KEY name (None when none is set)."""
    return from_options(None, None, None, os.environ)


# -- making servers and channels ----------------------------------------------------------------


def add_port(server: grpc.aio.Server | grpc.Server, address: str, tls: TlsConfig | None) -> int:
    """``server.add_secure_port`` with mutual TLS, or ``add_insecure_port`` without TLS."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, tls.server_credentials)


def aio_channel(address: str, tls: TlsConfig | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to ``address``: secure with ``tls``, else plaintext."""
    import grpc

    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, tls.channel_credentials, options=options)


def channel(address: str, tls: TlsConfig | None, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A blocking gRPC channel to ``address``: secure with ``tls``, else plaintext."""
    import grpc

    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.channel_credentials, options=options)


def mismatch_hint(error: str, have_tls: bool) -> str:
    """A hint to append to a connection error that looks like a TLS mismatch ("" when it
    does not): gRPC reports a plaintext client refused by a TLS server only as "Socket closed",
    which names neither TLS nor the flags that fix it."""
    if not have_tls:
        # Not "Connection refused": nothing listens there, which no flag fixes.
        if "Socket closed" in error or "Connection reset" in error:
            return (f" (a cluster with TLS closes plaintext connections: give --ca, --cert and --key, or "
                    f"${CA_ENV}, ${CERT_ENV}, ${KEY_ENV})")
        return ""
    if "WRONG_VERSION_NUMBER" in error:
        return " (the server speaks plaintext, not TLS: drop --ca, --cert and --key, and unset $TESSERA_CA ...)"
    if "CERTIFICATE_VERIFY_FAILED" in error:
        return " (the server's certificate is not signed by the --ca given: is it this cluster's CA?)"
    if "Socket closed" in error or "ALERT" in error:
        return " (the server refused this client's certificate: is --cert signed by the cluster's CA?)"
    return ""
