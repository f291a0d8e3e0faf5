"""``--target``: which store the bench drives and how to reach it.

``tessera://ROUTER[,ROUTER...]`` or ``etcd://HOST:PORT[,...]``; a bare ``HOST:PORT`` list means
Tessera (what ``--router`` always meant). ``tessera`` / ``etcd`` with no address (or an empty
``scheme://``) name the kind for ``--local``, which starts the cluster itself. The etcd driver
and launcher are imported only when an etcd target is asked for, so a Tessera run needs none
of etcd's client code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from tools.bench.driver import Driver, LocalTarget

KINDS = ("tessera", "etcd")


class TargetError(ValueError):
    """A --target that cannot be used; the message says why (the CLI exits 2 with it)."""


class MissingSupport(RuntimeError):
    """The code or program a target needs is not installed; the message says what (exit 1)."""


@dataclass(frozen=True)
class Target:
    kind: str  # "tessera" or "etcd"
    addresses: tuple[str, ...]  # empty: none given (only meaningful with --local)

    def __str__(self) -> str:
        return f"{self.kind}://{','.join(self.addresses)}"


def parse_target(text: str) -> Target:
    """Parse a --target string (see the module docstring)."""
    text = text.strip()
    kind, sep, rest = text.partition("://")
    if not sep:
        if text in KINDS:
            kind, rest = text, ""
        else:
            kind, rest = "tessera", text
    if kind not in KINDS:
        raise TargetError(f"--target {text!r}: unknown scheme {kind!r} (tessera:// or etcd://)")
    addresses = tuple(a.strip() for a in rest.split(",") if a.strip())
    for a in addresses:
        host, colon, port = a.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise TargetError(f"--target {text!r}: {a!r} is not HOST:PORT")
    return Target(kind, addresses)


def make_driver(
    target: Target,
    deadline_s: float = 10.0,
    tls: tuple[str, str, str] | None = None,
    token: str | None = None,
    wire: str = "tcp",
) -> Driver:
    """A Driver connected to ``target`` (which must name addresses); ``tls``: the (ca, cert,
    key) files for mutual TLS (Tessera only); ``wire``: "tcp", the KV wire where a node has one
    (D28), or "grpc", KV.Stream (Tessera only: etcd is gRPC)."""
    if not target.addresses:
        raise TargetError(f"--target {target.kind}: no address (give {target.kind}://HOST:PORT, or use --local)")
    if target.kind == "tessera":
        from common.tls import TlsConfig
        from tools.bench.tessera_driver import TesseraDriver

        return TesseraDriver(list(target.addresses), deadline_s=deadline_s,
                             tls=TlsConfig.load(*tls) if tls is not None else None, token=token,
                             use_wire=wire == "tcp")
    if tls is not None or token is not None:
        raise TargetError("--ca/--cert/--key, --token (and --tls, --auth) apply to Tessera targets only")
    try:
        # By name: the etcd side is a separate module that a Tessera-only run never loads.
        etcd_driver = importlib.import_module("tools.bench.etcd_driver")
    except ImportError as exc:
        raise MissingSupport(f"the etcd driver is not available in this build ({exc})") from exc
    driver: Driver = etcd_driver.EtcdDriver(list(target.addresses))
    return driver


def start_local(kind: str, partitions: int, log_level: str, tls: bool = False, auth: bool = False) -> LocalTarget:
    """Start a throw-away cluster of ``kind`` and wait until it serves; the caller stops it.
    ``tls``: a Tessera cluster with mutual TLS (its client files: ``tls_files``); ``auth``: with
    --auth too (its bootstrap admin token: ``token``)."""
    if kind == "tessera":
        from tools.bench.tessera_local import TesseraLocal

        return TesseraLocal.start_new(partitions=partitions, log_level=log_level, tls=tls, auth=auth)
    if tls or auth:
        raise TargetError("--tls applies to a local Tessera cluster only")
    try:
        EtcdCluster = importlib.import_module("tools.etcd_cluster").EtcdCluster  # noqa: N806
    except ImportError as exc:
        raise MissingSupport(f"the local etcd launcher is not available in this build ({exc})") from exc
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="tessera-bench-etcd-")
    try:
        cluster = EtcdCluster(root, members=3, log_level=log_level)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        cluster.start()
        cluster.wait_ready(60)
    except BaseException:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
        raise
    return _RemovingRoot(cluster, root)


class _RemovingRoot:
    """A LocalTarget whose stop() also removes the temp directory it lives in."""

    def __init__(self, inner: LocalTarget, root: str) -> None:
        self._inner = inner
        self._root = root

    @property
    def target(self) -> str:
        return self._inner.target

    def leader_for(self, key: bytes) -> str:
        return self._inner.leader_for(key)

    def leaders(self) -> dict[str, int]:
        return self._inner.leaders()

    def kill(self, member: str) -> None:
        self._inner.kill(member)

    def restart(self, member: str) -> None:
        self._inner.restart(member)

    def elections(self) -> int:
        return self._inner.elections()

    def stop(self) -> None:
        import shutil

        try:
            self._inner.stop()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
