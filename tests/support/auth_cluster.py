"""An ``--auth`` cluster of real processes with a token of every role (docs/auth.md), for process
tests: tests/process/test_auth.py (every RPC's check) and tests/process/test_kv_wire_security.py
(the KV wire's TLS and tokens, D28) start theirs the same way.

:func:`auth_cluster` starts 3 nodes and 1 router with ``--auth`` (so mutual TLS), one partition
and no scheduler (no leader moves under a test), creates a token of each role and one admin
token that is revoked at once, and puts ``existing`` = ``v`` (something to read, delete and
compare-and-set). :func:`meta` calls the router's Meta service, :func:`client` makes a blocking
client.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from common import auth, tls
from tesserapb import meta_pb2
from tools.cluster import Cluster

RPC_TIMEOUT_S = 5.0
REVOKE_BOUND_S = 3.0  # docs/auth.md: a revoked token stops working on nodes within this


@dataclass
class Env:
    cluster: Cluster
    admin: str  # the bootstrap admin token
    tokens: dict[str, str]  # role -> token
    revoked: str
    client_tls: tls.TlsConfig
    member_tls: tls.TlsConfig  # node 1's certificate: a member's


@contextmanager
def auth_cluster(prefix: str, nodes: int = 3) -> Iterator[Env]:
    """A running ``--auth`` cluster and its tokens; stopped and removed on exit."""
    root = tempfile.mkdtemp(prefix=prefix)
    c = Cluster(root=root, nodes=nodes, partitions=1, auth=True, schedule_interval=0)
    try:
        c.start()
        c.wait_ready(90)
        assert c.admin_token is not None and c.certs is not None
        ca, cert, key = c.tls_files or ("", "", "")
        client_tls = tls.TlsConfig.load(ca, cert, key)
        member_tls = tls.TlsConfig.load(ca, c.certs.nodes[1].cert, c.certs.nodes[1].key)
        e = Env(c, c.admin_token, {}, "", client_tls, member_tls)
        for role in auth.ROLE_NAMES:
            e.tokens[role] = meta(e, "CreateToken", meta_pb2.CreateTokenRequest(role=role), e.admin).token
        revoked = meta(e, "CreateToken", meta_pb2.CreateTokenRequest(role="admin"), e.admin)
        meta(e, "RevokeToken", meta_pb2.RevokeTokenRequest(id=revoked.info.id), e.admin)
        e.revoked = revoked.token
        # Something to delete and compare-and-set.
        with client(e, e.admin) as cl:
            cl.put(b"existing", b"v")
        yield e
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


def meta(e: Env, method: str, request: Message, token: str | None, tls_config: tls.TlsConfig | None = None) -> Any:
    """Meta.``method`` at router 1 with ``token`` (None: none), as a client (or ``tls_config``)."""
    from tesserapb import meta_pb2_grpc

    assert e.cluster.router is not None
    with tls.channel(e.cluster.router.address, tls_config or e.client_tls) as ch:
        return getattr(meta_pb2_grpc.MetaStub(ch), method)(request, metadata=auth.call_metadata(token),
                                                           timeout=RPC_TIMEOUT_S)


def client(e: Env, token: str | None) -> Any:
    """A blocking client (router.client.Client) with the client certificate and ``token``."""
    from router.client import Client

    return Client(e.cluster.router_addresses, tls=e.client_tls, token=token, deadline_s=10)
