"""The ``tessera`` command: one program for every job.

The forms below are the command-line contract written down in docs/cli.md; scripts and tests
outside the project rely on them, so extend them freely but do not break them (and keep
docs/cli.md in step). A command or option this version does not have yet parses its
arguments, then says it is not available in this version and exits 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

# Flag defaults and choices come from the code that uses them (node.settings,
# router.placement.config, the nemesis schedule, common.logs) and are never written here a
# second time. Those modules import nothing heavy, so reading them at parse time keeps
# `tessera --help` free of gRPC, LMDB and asyncio.
from common import logs
from common.auth import ROLE_NAMES, TOKEN_ENV
from common.tls import CA_ENV, CERT_ENV, KEY_ENV
from node.settings import DISK_RESERVE_MB, HEARTBEAT_INTERVAL_S, AdmissionLimits, Limits, RaftSettings
from router.placement.config import MAX_GROUP_MEMBERS, GroupSettings, PlacementConfig
from tools.nemesis.histories import CHECK_TIME_LIMIT_S, WORKLOADS
from tools.nemesis.schedule import KINDS as FAULTS

if TYPE_CHECKING:  # imported when a kv command runs (see _kv)
    from common.tls import TlsConfig
    from router.client import Client

DEFAULT_ROUTER = "127.0.0.1:7100"
ROUTER_ENV = "TESSERA_ROUTER"


EXIT_NOT_AVAILABLE = 2
NOT_AVAILABLE = "not available in this version of tessera (nothing was done)"
EXIT_USAGE = 2
DEFAULT_KV_TIMEOUT = 5.0
STDIN_VALUE = "-"  # `kv put KEY -` (or VALUE omitted) reads the value from stdin
_RAFT = RaftSettings()
_LIMITS = Limits()
_ADMISSION = AdmissionLimits()
_PLACEMENT = PlacementConfig()
_GROUP = GroupSettings()
N = TypeVar("N", int, float)  # what a numeric flag parses to


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep our hand-wrapped descriptions and epilogs as written."""


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("tessera")
    except PackageNotFoundError:  # running from a work tree that was never installed
        return "unknown"


class _VersionAction(argparse.Action):
    """--version, looking the version up only when asked: importlib.metadata is the biggest
    import of the parser (~15 ms), which every ``tessera --help`` would pay otherwise."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the installed version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"tessera {_version()}")
        parser.exit()


# -- helpers for building the parser -------------------------------------------------------


def _add_router_option(parser: argparse.ArgumentParser) -> None:
    # default=SUPPRESS at every level so `tessera kv --router A get x` and
    # `tessera kv get x --router A` both work (a subparser's default would otherwise
    # overwrite the value given to its parent); main() fills in the real default.
    parser.add_argument(
        "--router",
        metavar="ADDR[,ADDR...]",
        default=argparse.SUPPRESS,
        help=f"router address(es), tried in turn (default: ${ROUTER_ENV}, else {DEFAULT_ROUTER})",
    )


def _add_tls_options(parser: argparse.ArgumentParser, *, server: bool = False, key_flag: bool = True) -> None:
    """--ca, --cert, --key: mutual TLS (docs/security.md), into args.tls_ca/tls_cert/tls_key.
    A client command's flags fall back to $TESSERA_CA, $TESSERA_CERT, $TESSERA_KEY (and, like
    --router, may come before or after the subcommand: SUPPRESS at every level); a server's do
    not read the environment, so a shell set up for the CLI cannot hand a node the client's
    certificate. ``--tls-key`` is the same as ``--key`` everywhere; ``admin partition``, whose
    ``--key`` names a key of the store, has only that spelling (``key_flag=False``)."""
    if server:
        whose, default, env = "this process's", None, ""
    else:
        whose, default, env = "the client", argparse.SUPPRESS, " (default: $%s)"
    parser.add_argument("--ca", metavar="FILE", default=default, dest="tls_ca",
                        help="the cluster CA certificate (PEM): TLS, and peers must present a certificate "
                             "it signed" + (env % CA_ENV if env else "; without --ca/--cert/--key: plaintext"))
    parser.add_argument("--cert", metavar="FILE", default=default, dest="tls_cert",
                        help=f"{whose} certificate (PEM), signed by the cluster CA" + (env % CERT_ENV if env else ""))
    parser.add_argument(*(["--key"] if key_flag else []), "--tls-key", metavar="FILE", default=default,
                        dest="tls_key", help=f"{whose} private key (PEM)" + (env % KEY_ENV if env else ""))


def _client_tls(args: argparse.Namespace, name: str) -> TlsConfig | None:
    """The TlsConfig a client command's --ca/--cert/--key (else $TESSERA_*) ask for; None for
    plaintext. Raises _UsageError with the command's message when they cannot be used."""
    from common.tls import TlsConfigError, from_args

    try:
        return from_args(args, os.environ)
    except TlsConfigError as exc:
        raise _UsageError(f"{name}: {exc}") from None


def _add_token_option(parser: argparse.ArgumentParser) -> None:
    """--token: the bearer token of a cluster run with --auth (docs/auth.md), into args.token;
    falls back to $TESSERA_TOKEN. SUPPRESS at every level, as --router."""
    parser.add_argument("--token", metavar="TOKEN", default=argparse.SUPPRESS,
                        help=f"bearer token for a cluster run with --auth (default: ${TOKEN_ENV})")


def _add_auth_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--auth", action="store_true",
                        help="require a token with the right role on every client call (docs/auth.md); "
                             "members pass by their certificate, so it needs --ca, --cert and --key")


class _UsageError(Exception):
    """A usage problem found after parsing (exit 2; the message is printed as is)."""


def _add_timeout_option(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS at every level, as for --router; main() fills in the default.
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help=f"give up after this long, retries included (default: {DEFAULT_KV_TIMEOUT:g})",
    )


def _add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print machine-readable JSON instead of a table",
    )


def _add_metrics_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help=f"serve the {what}'s Prometheus metrics at http://HOST:PORT/metrics (port 0 picks a free "
             "one, printed at start; docs/observability.md) (default: no metrics listener)",
    )


def _add_log_level_option(parser: argparse.ArgumentParser, passed_on: str = "") -> None:
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=logs.LEVELS,
        default=logs.DEFAULT_LEVEL,
        help=f"least severe log records written to stderr{passed_on} (default: %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=logs.FORMATS,
        default=logs.DEFAULT_FORMAT,
        help="log lines as text, or as JSON objects with ts, level, logger, msg and, when known, "
             "partition and store (docs/observability.md) (default: %(default)s)",
    )


def _number(kind: Callable[[str], N], what: str, ok: Callable[[N], bool], bound: str) -> Callable[[str], N]:
    """An argparse type: parse ``kind`` and check ``ok(value)``, naming the bound when it fails."""

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


_positive_int = _number(int, "an integer", lambda v: v >= 1, ">= 1")
_non_negative_int = _number(int, "an integer", lambda v: v >= 0, ">= 0")
_positive_float = _number(float, "a number", lambda v: v > 0, "> 0")
_group_size = _number(int, "an integer", lambda v: 1 <= v <= MAX_GROUP_MEMBERS, f"in [1, {MAX_GROUP_MEMBERS}]")
_non_negative_float = _number(float, "a number", lambda v: v >= 0, ">= 0")


def _zone_name(text: str) -> str:
    """A zone label: printable, no spaces or commas (it is shown in tables and lists)."""
    if not text or len(text) > 64 or not text.isprintable() or any(c in text for c in " ,\t"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a zone name (1-64 printable characters, no spaces "
                                         "or commas)")
    return text


def _mutation(table: Callable[[], dict[str, str]]) -> Callable[[str], str]:
    """An argparse type for a mutation name, checked against ``table()`` only when the flag
    is given: the tables are test-only code that a production start never imports."""

    def parse(text: str) -> str:
        known = table()
        if text not in known:
            listing = "".join(f"\n  {name:22} {what}" for name, what in known.items())
            raise argparse.ArgumentTypeError(f"unknown mutation {text!r}; known:{listing}")
        return text

    return parse


def _raft_mutations() -> dict[str, str]:
    from node.raft import known_mutations

    return known_mutations()


def _client_mutations() -> dict[str, str]:
    from tools.nemesis.client_mutations import describe

    return describe()


def _simulator_mutations() -> dict[str, str]:
    from tools.simulator.mutations import describe

    return describe()


def _add_new_cluster_options(parser: argparse.ArgumentParser) -> None:
    """--partitions and --max-down: what `tessera router` and `tessera cluster up` (which
    passes them to its router) tell the placement service about a new cluster."""
    parser.add_argument("--partitions", type=_positive_int, metavar="N", default=_PLACEMENT.partitions,
                        help="partitions to pre-split a brand-new cluster into (default: %(default)s)")
    parser.add_argument("--max-down", type=_positive_float, metavar="SECONDS", default=_PLACEMENT.max_down_s,
                        help="a node down this long has each of its replicas re-created on another up "
                             "node (default: %(default)g)")
    parser.add_argument("--schedule-interval", type=_non_negative_float, metavar="SECONDS",
                        default=_PLACEMENT.schedule_interval_s,
                        help="how often the placement leader's scheduler looks for work (repair, drain, "
                             "zones, replica and leader balance; it also looks as soon as a partition "
                             "changes); 0 turns it off: placement then does only what admins ask "
                             "(default: %(default)g)")
    parser.add_argument("--max-moves", type=_positive_int, metavar="N", default=_PLACEMENT.max_moves,
                        help="replica moves (each a snapshot to a new replica) the scheduler keeps in "
                             "flight at once, cluster-wide (default: %(default)s)")


_SIZE_UNITS = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30}


def _byte_size(text: str) -> int:
    """A size in bytes: 65536, 64KiB, 64MiB, 1GiB (k/m/g alone also mean KiB/MiB/GiB)."""
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    unit = _SIZE_UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None or int(m.group(1)) * unit <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size like 65536 or 64MiB, got {text!r}")
    return int(m.group(1)) * unit


def _add_split_option(parser: argparse.ArgumentParser) -> None:
    """--split-size: `tessera router` and `tessera cluster up` (which passes it on)."""
    parser.add_argument("--split-size", type=_byte_size, metavar="BYTES", default=_PLACEMENT.split_size,
                        help="a partition larger than this is split at its middle key; 65536, 64KiB, 64MiB "
                             "(default: %(default)s, 64 MiB)")


def _fault_list(text: str) -> list[str]:
    faults = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        raise argparse.ArgumentTypeError(
            f"unknown fault(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(FAULTS)}"
        )
    return faults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tessera",
        formatter_class=_Formatter,
        description=(
            "Tessera: a sharded, replicated key-value store.\n\n"
            "The key space is cut into range partitions, each replicated by its own Raft group;\n"
            "a router maps keys to partition leaders and moves replicas and leaders around."
        ),
        epilog=(
            "examples:\n"
            "  tessera cluster up                 a local 3-node cluster in the foreground\n"
            "  tessera kv put greeting hello      write a key through the router\n"
            "  tessera kv get greeting            read it back\n"
            "  tessera simulate --seeds 200       check the Raft core in the simulator\n\n"
            "Run 'tessera COMMAND --help' for a command's options; docs/cli.md has them all."
        ),
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    _build_node(commands)
    _build_router(commands)
    _build_cluster(commands)
    _build_kv(commands)
    _build_admin(commands)
    _build_bench(commands)
    _build_simulate(commands)
    _build_nemesis(commands)
    _build_check(commands)
    return parser


def _build_node(commands) -> None:
    p = commands.add_parser(
        "node",
        help="run one storage node (data plane: many partition replicas)",
        formatter_class=_Formatter,
        description=(
            "Run one storage node in the foreground. A node hosts replicas of many partitions\n"
            "(multi-Raft) with one write-ahead log and one LMDB environment, serves the KV API\n"
            "for the partitions it leads, and heartbeats the router's placement service.\n"
            "Usually started for you by 'tessera cluster up'."
        ),
    )
    p.add_argument("--store-id", type=_positive_int, metavar="N",
                   help="this node's store id (a fresh data dir gets one from the router)")
    p.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:7200",
                   help="address of the node's gRPC server (default: %(default)s)")
    p.add_argument("--advertise", metavar="HOST:PORT",
                   help="address peers and clients should dial (default: --listen)")
    p.add_argument("--data-dir", metavar="DIR", default="./data/node",
                   help="WAL and LMDB directory; survives restarts (default: %(default)s)")
    p.add_argument("--routers", metavar="ADDR[,ADDR...]", default=DEFAULT_ROUTER,
                   help="placement service addresses to heartbeat (default: %(default)s)")
    p.add_argument("--zone", metavar="NAME", type=_zone_name,
                   help="this node's failure domain (a rack, a machine, a data centre): placement never "
                        "puts two replicas of a partition in one zone while enough zones are up "
                        "(default: none, the node is a domain of its own)")
    _add_tls_options(p, server=True)
    _add_auth_option(p)
    _add_log_level_option(p)
    _add_metrics_option(p, "node")
    p.add_argument("--tick-ms", type=_positive_int, metavar="MS", default=round(_RAFT.tick_s * 1000),
                   help=f"Raft tick; elections time out after {_RAFT.election_tick}-"
                        f"{2 * _RAFT.election_tick} ticks (default: %(default)s)")
    p.add_argument("--compact-threshold", type=_positive_int, metavar="N", default=_RAFT.compact_threshold,
                   help="compact a partition's log once it holds this many applied entries "
                        "(default: %(default)s)")
    p.add_argument("--compact-keep", type=_positive_int, metavar="N", default=_RAFT.compact_keep,
                   help="applied entries kept after compaction for slow followers (default: %(default)s)")
    p.add_argument("--max-key-bytes", type=_positive_int, metavar="BYTES", default=_LIMITS.max_key_bytes,
                   help="largest key accepted (default: %(default)s)")
    p.add_argument("--max-value-bytes", type=_positive_int, metavar="BYTES", default=_LIMITS.max_value_bytes,
                   help="largest value accepted (default: %(default)s)")
    p.add_argument("--heartbeat-interval", type=_positive_float, metavar="SECONDS", default=HEARTBEAT_INTERVAL_S,
                   help="report to placement this often when nothing prompts it sooner (placement's "
                        "operations and the node's own changes are sent at once) (default: %(default)g)")
    p.add_argument("--peer-addresses", metavar="FILE",
                   help='JSON {store id: host:port, or {"address": host:port, "peer_address": '
                        'host:port}} overriding where peers are dialled, their gRPC server and their '
                        "Raft batch listener (tessera nemesis puts fault-injecting proxies there)")
    p.add_argument("--peer-listen", metavar="HOST:PORT",
                   help="where to take Raft batches from peer stores over plain TCP (docs/decisions.md "
                        "D23; peers ask for it over gRPC); 'none' keeps them on gRPC "
                        "(default: the --listen host, any free port)")
    p.add_argument("--kv-wire-listen", metavar="HOST:PORT",
                   help="where clients may send KV requests over plain TCP, or TLS with --ca/--cert/--key "
                        "(docs/kv-wire.md, D28; clients ask for it over gRPC); 'none' keeps them on gRPC "
                        "(default: the --listen host, any free port)")
    p.add_argument("--max-proposals", type=_positive_int, metavar="N", default=_ADMISSION.node_proposals,
                   help="writes queued or in flight on this node at most; more are refused with "
                        "RESOURCE_EXHAUSTED and a retry-after hint (default: %(default)s)")
    p.add_argument("--max-partition-proposals", type=_positive_int, metavar="N",
                   default=_ADMISSION.partition_proposals,
                   help="the same bound per partition (default: %(default)s)")
    p.add_argument("--max-stream-mb", type=_positive_int, metavar="MIB", default=_ADMISSION.stream_bytes >> 20,
                   help="unanswered request bytes one client stream may have; more are refused "
                        "(default: %(default)s)")
    p.add_argument("--max-snapshots", type=_positive_int, metavar="N", default=_ADMISSION.snapshots_out,
                   help="snapshots streamed to peers at once, and received at once (default: %(default)s)")
    p.add_argument("--disk-reserve-mb", type=_non_negative_int, metavar="MIB", default=DISK_RESERVE_MB,
                   help="space set aside in --data-dir and given back when the disk fills, so that "
                        "writes already in flight land and reads stay served; at most 5%% of the "
                        "file system; 0: none (default: %(default)s)")
    p.add_argument("--fault-file", metavar="FILE",
                   help='JSON fault hooks polled every 100 ms: {"fail_fsync": true}, '
                        '{"fsync_delay_ms": N} or {"wal_enospc": true}; read once at start: '
                        '{"replay_delay_ms": N} holds the WAL replay (health NOT_SERVING); absent or '
                        'empty means no faults')
    p.add_argument("--raft-mutation", metavar="NAME", type=_mutation(_raft_mutations),
                   help="TESTING ONLY: run a known-buggy Raft core (tessera nemesis --raft-mutation "
                        "proves the nemesis catches it); never in production; an unknown NAME "
                        "lists the known ones")
    p.add_argument("--testing-unsynced-is-lost", action="store_true",
                   help="TESTING ONLY: keep what the WAL and the snapshot spool wrote but did not "
                        "fsync in this process's memory, so that SIGKILL loses it as a power cut "
                        "would; never in production")
    p.add_argument("--testing-fsync-is-noop", action="store_true",
                   help="TESTING ONLY, with --testing-unsynced-is-lost: fsync does nothing, so "
                        "SIGKILL loses acknowledged writes (proves the crash tests can tell)")
    p.set_defaults(handler=_node, command_name="node")


def _build_router(commands) -> None:
    p = commands.add_parser(
        "router",
        help="run one router (control plane: placement, scheduling, KV proxy)",
        formatter_class=_Formatter,
        description=(
            "Run one router in the foreground. Routers form the placement service (its own\n"
            "Raft group: 1 replica in development, 3 in production) that owns the partition\n"
            "table, schedules leader balance, replica repair and splits, and proxies the KV\n"
            "API for thin clients. Usually started for you by 'tessera cluster up'."
        ),
    )
    p.add_argument("--id", type=_positive_int, metavar="N", default=1,
                   help="this router's id within the placement group (default: %(default)s)")
    p.add_argument("--listen", metavar="HOST:PORT", default=DEFAULT_ROUTER,
                   help="address of the Meta and KV-proxy gRPC server (default: %(default)s)")
    p.add_argument("--peers", metavar="ID=ADDR[,ID=ADDR...]",
                   help="the other routers of the placement group, by id (default: none, a group of 1); "
                        "every member is started with the same set, which is fixed when the group is created")
    p.add_argument("--data-dir", metavar="DIR", default="./data/router",
                   help="placement state directory; survives restarts (default: %(default)s)")
    p.add_argument("--checkpoint-every", type=_positive_int, metavar="N", default=_GROUP.checkpoint_every,
                   help="write the placement table to disk every N applied commands, and compact the "
                        "placement log behind it (default: %(default)s)")
    _add_new_cluster_options(p)
    _add_split_option(p)
    p.add_argument("--replicas", type=_positive_int, metavar="N", default=_PLACEMENT.replicas,
                   help="replicas of each pre-split partition; the cluster is created once this "
                        "many nodes have registered (default: %(default)s)")
    p.add_argument("--store-down-after", type=_positive_float, metavar="SECONDS",
                   default=_PLACEMENT.store_down_after_s,
                   help="a node silent this long is reported down (default: %(default)g)")
    _add_tls_options(p, server=True)
    _add_auth_option(p)
    p.add_argument("--admin-token-hash", metavar="SHA256", default=None,
                   help="with --auth: the hex sha256 of a bootstrap admin token, added once to a cluster "
                        "that never had one (cluster up --auth makes the token and passes its hash)")
    _add_log_level_option(p)
    _add_metrics_option(p, "router")
    p.set_defaults(handler=_router, command_name="router")


def _build_cluster(commands) -> None:
    p = commands.add_parser(
        "cluster",
        help="run a whole local cluster (cluster up)",
        formatter_class=_Formatter,
        description="Manage a local cluster of node and router processes on this machine.",
    )
    sub = p.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", title="subcommands")
    sub.required = True
    up = sub.add_parser(
        "up",
        help="start nodes and routers in the foreground",
        formatter_class=_Formatter,
        description=(
            "Start a whole local cluster in the foreground: --routers router processes and\n"
            "--nodes node processes on consecutive ports from --base-port (the first router\n"
            "listens on --base-port). Once the cluster accepts writes it prints one line\n"
            "starting with 'ready:' that holds the router addresses, comma-separated (give\n"
            "them to --router). SIGINT/SIGTERM stops every process it started. Data in\n"
            "--data-dir survives a restart of the command."
        ),
    )
    up.add_argument("--nodes", type=_positive_int, default=3, metavar="N",
                    help="node processes (default: %(default)s)")
    up.add_argument("--routers", type=_group_size, default=1, metavar="N",
                    help="router processes, the placement group's members: 1 for development, 3 "
                         "so that losing any one router loses nothing (default: %(default)s)")
    _add_new_cluster_options(up)
    _add_split_option(up)
    up.add_argument("--zones", type=_non_negative_int, default=0, metavar="N",
                    help="label the nodes with zones z1..zN, round-robin (tessera node --zone); 0: no "
                         "zones (default: %(default)s)")
    up.add_argument("--data-dir", default="./data", metavar="DIR",
                    help="root of every process's data directory (default: %(default)s)")
    up.add_argument("--base-port", type=_non_negative_int, default=7100, metavar="PORT",
                    help="first port used; 0 lets every process pick a free port "
                         "(default: %(default)s)")
    up.add_argument("--tls", action="store_true",
                    help="mutual TLS on every connection: makes a CA and a certificate per process in "
                         "DATA_DIR/tls (kept for the next start) and prints how clients use them "
                         "(default: plaintext, for local development)")
    up.add_argument("--auth", action="store_true",
                    help="every client call needs a bearer token (docs/auth.md); turns --tls on too, and "
                         "prints a bootstrap admin token on the cluster's first start (only then)")
    _add_log_level_option(up, ", here and by every process it starts")
    up.set_defaults(handler=_cluster_up, command_name="cluster up")


def _build_kv(commands) -> None:
    p = commands.add_parser(
        "kv",
        help="read and write keys (put/get/delete/scan)",
        formatter_class=_Formatter,
        description=(
            "Read and write keys through a router. Keys and values are taken as UTF-8 text\n"
            "from the command line (put reads its value from stdin instead, byte for byte,\n"
            "when VALUE is omitted or '-'); get and scan print the raw stored bytes."
        ),
    )
    _add_router_option(p)
    _add_tls_options(p)
    _add_token_option(p)
    _add_timeout_option(p)
    sub = p.add_subparsers(dest="kv_command", metavar="SUBCOMMAND", title="subcommands")
    sub.required = True

    put = sub.add_parser(
        "put",
        help="write KEY = VALUE (VALUE omitted or '-': read from stdin)",
        formatter_class=_Formatter,
        description=(
            "Write KEY = VALUE. With VALUE omitted or '-', the value is read from stdin to its\n"
            "end, bytes exactly as given: nothing is stripped, so a trailing newline is part of\n"
            "the value (echo adds one; printf does not). Large and binary values need no shell\n"
            "quoting this way:\n"
            "  tessera kv put photo < photo.jpg\n"
            "  printf 'a\\0b' | tessera kv put k -\n"
            "To store the one-byte value '-', pipe it in: printf '%s' - | tessera kv put KEY"
        ),
    )
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE", nargs="?", default=STDIN_VALUE,
                     help="the value as UTF-8 text; omitted or '-': read it from stdin")
    _add_router_option(put)
    _add_tls_options(put)
    _add_token_option(put)
    _add_timeout_option(put)
    put.set_defaults(handler=_kv, command_name="kv put")

    get = sub.add_parser(
        "get",
        help="print the value of KEY",
        description="Print the raw value of KEY. A missing key exits 1 with a message on stderr.",
    )
    get.add_argument("key", metavar="KEY")
    get.add_argument("--consistency", choices=("linearizable", "lease", "stale"),
                     default="lease",
                     help="linearizable (ReadIndex), lease (leader lease) or stale (any "
                          "replica, bounded staleness) (default: %(default)s)")
    get.add_argument("--max-staleness-ms", type=_non_negative_int, metavar="MS", default=0,
                     help="with --consistency stale: the oldest data accepted "
                          "(default: the server's bound)")
    _add_router_option(get)
    _add_tls_options(get)
    _add_token_option(get)
    _add_timeout_option(get)
    get.set_defaults(handler=_kv, command_name="kv get")

    delete = sub.add_parser("delete", help="delete KEY", description="Delete KEY.")
    delete.add_argument("key", metavar="KEY")
    _add_router_option(delete)
    _add_tls_options(delete)
    _add_token_option(delete)
    _add_timeout_option(delete)
    delete.set_defaults(handler=_kv, command_name="kv delete")

    scan = sub.add_parser(
        "scan",
        help="list keys in [START, END)",
        description=(
            "Print the key/value pairs in [START, END), in key order, across partitions.\n"
            "An omitted START or END is unbounded."
        ),
        formatter_class=_Formatter,
    )
    scan.add_argument("start", metavar="START", nargs="?", default="")
    scan.add_argument("end", metavar="END", nargs="?", default="")
    scan.add_argument("--limit", type=_positive_int, metavar="N",
                      help="stop after N pairs (default: no limit)")
    scan.add_argument("--consistency", choices=("linearizable", "lease", "stale"),
                      default="lease", help="read consistency (default: %(default)s)")
    _add_router_option(scan)
    _add_tls_options(scan)
    _add_token_option(scan)
    _add_timeout_option(scan)
    scan.set_defaults(handler=_kv, command_name="kv scan")


def _build_admin(commands) -> None:
    p = commands.add_parser(
        "admin",
        help="inspect and steer the cluster (stores, partitions, leaders, replicas, operations)",
        formatter_class=_Formatter,
        description=(
            "Inspect and steer the cluster through the placement service of any router in\n"
            "--router (a follower router's answer is followed to the leader). Tables for\n"
            "people; --json prints the shapes of docs/cli.md. Commands that change something\n"
            "wait until placement sees it done (--no-wait: just queue it) and exit 1 naming\n"
            "why when it is refused or not done within --timeout."
        ),
    )
    _add_router_option(p)
    _add_tls_options(p)
    _add_token_option(p)
    _add_json_option(p)
    sub = p.add_subparsers(dest="admin_command", metavar="SUBCOMMAND", title="subcommands")
    sub.required = True

    def leaf(name: str, help_text: str, args: Sequence[tuple[str, dict]], *, available: bool = True,
             changes: bool = False) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:]
                           + ("." if available else ". Not available in this version: exits 2."))
        for arg_name, kwargs in args:
            q.add_argument(arg_name, **kwargs)
        _add_router_option(q)
        _add_tls_options(q, key_flag=name != "partition")
        _add_token_option(q)
        _add_json_option(q)
        if changes:
            q.add_argument("--no-wait", action="store_true", help="queue the operation and return at once")
            q.add_argument("--timeout", type=_positive_float, metavar="SECONDS", default=30.0,
                           help="how long to wait for it to be done (default: %(default)g)")
        q.set_defaults(handler=_admin if available else _not_available, command_name=f"admin {name}")
        return q

    pid = ("id", {"metavar": "ID", "type": _positive_int, "help": "partition id"})
    store = ("store", {"metavar": "STORE", "type": _positive_int, "help": "store id"})
    leaf("stores", "list stores with their state, replica and leader counts", ())
    leaf("partitions", "list partitions with range, epoch, leader, term and replica progress", ())
    one = leaf("partition", "show one partition, by ID or by a key it holds",
               (("id", {"metavar": "ID", "type": _positive_int, "nargs": "?", "help": "partition id"}),))
    one.add_argument("--key", metavar="KEY", help="the partition that holds KEY")
    leaf("transfer-leader", "move partition ID's leadership to STORE", (pid, store), changes=True)
    leaf("add-replica", "add a replica of partition ID on STORE (as a learner, then promoted)",
         (pid, store), changes=True)
    leaf("remove-replica", "remove partition ID's replica from STORE", (pid, store), changes=True)
    leaf("operations", "list the operations placement has not yet seen done, with their age", ())
    leaf("split", "split partition ID at KEY (default: its middle by size)",
         (pid, ("key", {"metavar": "KEY", "nargs": "?", "help": "split key (the new right half starts here)"})),
         changes=True)
    drain = leaf("drain", "mark STORE draining and wait until the scheduler has moved every replica and leader off it",
         (store,), changes=True)
    drain.set_defaults(timeout=300.0)  # every replica on the store is a snapshot to send
    leaf("remove-store", "mark STORE removed for good (refused while it still holds replicas: drain it first, "
         "or wait for a dead store's repair)", (store,))
    leaf("routers", "show the placement group: members, leader, term, applied index", ())
    tok = leaf("token", "bearer tokens (docs/auth.md): 'token create --role R' prints a new token once, "
               "'token list' shows ids and roles (never a secret), 'token revoke ID'",
               (("token_action", {"metavar": "ACTION", "choices": ("create", "list", "revoke"),
                                  "help": "create, list or revoke"}),
                ("token_id", {"metavar": "ID", "type": _positive_int, "nargs": "?", "help": "revoke: the token's id"})))
    tok.add_argument("--role", choices=ROLE_NAMES, help="create: the token's role")
    tok.add_argument("--name", metavar="TEXT", help="create: a label (who or what the token is for; not secret)")


def _build_bench(commands) -> None:
    p = commands.add_parser(
        "bench",
        help="measure throughput and latency against a cluster (Tessera or etcd)",
        formatter_class=_Formatter,
        description=(
            "Drive a workload against a cluster and report throughput and latency (HDR histogram).\n"
            "Workloads: write (100% puts), a (50/50 read/update), b (95/5), c (100% reads), the\n"
            "YCSB mixes; scan (short range scans of 1-10 keys); cas (read, then compare-and-set\n"
            "with the version read). Read workloads first load every --keys key. --json writes at least\n"
            '  {"throughput": ops_per_s, "latency_ms": {"p50", "p90", "p99", "p999", "max"}, "errors": n,\n'
            '   "target": "tessera"|"etcd"}\n'
            'and with --failover also {"failover": {"longest_gap_s", "first_ok_s", "led_partitions"}}.'
        ),
    )
    p.add_argument("--workload", required=True, choices=("write", "a", "b", "c", "scan", "cas"),
                   help="operation mix (required)")
    p.add_argument("--concurrency", type=_positive_int, default=64, metavar="N",
                   help="requests in flight, over all client processes (default: %(default)s; "
                        "--failover uses 16)")
    p.add_argument("--duration", type=_positive_float, default=10.0, metavar="SECONDS",
                   help="measured run time, after the warm-up (default: %(default)g; --failover runs "
                        "at least 9)")
    p.add_argument("--warmup", type=_non_negative_float, default=1.0, metavar="SECONDS",
                   help="load offered but not measured before the run (default: %(default)g)")
    p.add_argument("--keys", type=_positive_int, default=100_000, metavar="N",
                   help="size of the key space (default: %(default)s)")
    p.add_argument("--value-size", type=_non_negative_int, default=128, metavar="BYTES",
                   help="bytes per value (default: %(default)s)")
    p.add_argument("--distribution", choices=("uniform", "zipfian"), default="uniform",
                   help="which keys are hot: uniform, or YCSB's scrambled zipfian (constant 0.99) "
                        "(default: %(default)s)")
    p.add_argument("--partitions", type=_positive_int, metavar="N",
                   help=f"with --local: the throw-away Tessera cluster's partitions (default: "
                        f"{_PLACEMENT.partitions}); without --local only recorded in the results "
                        "(tessera admin split splits a running cluster)")
    p.add_argument("--consistency", choices=("linearizable", "lease", "stale"), default="lease",
                   metavar="C", help="read consistency: linearizable, lease or stale; etcd reads "
                                     "lease and stale as serializable (default: %(default)s)")
    p.add_argument("--wire", choices=("tcp", "grpc"), default="tcp",
                   help="how the Tessera client reaches nodes: tcp, each node's KV wire (docs/kv-wire.md), or "
                        "grpc, its KV.Stream; etcd is always gRPC (default: %(default)s)")
    p.add_argument("--procs", type=_positive_int, default=1, metavar="N",
                   help="client processes sharing --concurrency, histograms merged; each one's CPU "
                        "use is reported (default: %(default)s)")
    p.add_argument("--target", metavar="URL",
                   help="tessera://ROUTER[,ROUTER...] or etcd://HOST:PORT[,...]; with --local just "
                        "tessera or etcd (default: tessera:// at --router)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--plot", metavar="FILE.png",
                   help="write throughput over time and the latency percentile plot to FILE.png "
                        "(needs matplotlib)")
    p.add_argument("--local", action="store_true",
                   help="start a throw-away 3-member cluster of the --target kind (Tessera: "
                        "--partitions partitions), measure it, remove it")
    p.add_argument("--failover", action="store_true",
                   help="with --local: a write load during which a leader is SIGKILLed; reports "
                        "the longest write gap and the time to the first successful write")
    p.add_argument("--tls", action="store_true",
                   help="with --local: the Tessera cluster runs mutual TLS (as 'cluster up --tls'), "
                        "the client too (a running cluster: --ca, --cert, --key instead)")
    p.add_argument("--auth", action="store_true",
                   help="with --local: the Tessera cluster runs --auth (and so TLS), the client uses the "
                        "bootstrap admin token (a running cluster: --token instead)")
    _add_router_option(p)
    _add_tls_options(p)
    _add_token_option(p)
    _add_log_level_option(p, ", here and (with --local) by every process it starts")
    p.set_defaults(handler=_bench, command_name="bench")


def _build_simulate(commands) -> None:
    p = commands.add_parser(
        "simulate",
        help="run the deterministic simulator over many seeds",
        formatter_class=_Formatter,
        description=(
            "Run the Raft core in the deterministic simulator: simulated time, network and\n"
            "crashes, every choice drawn from one seed. Each seed's history is checked for\n"
            "Raft invariants and linearizability. Exit 0 when every seed holds; exit 1 with\n"
            "the failing seed and a command that reproduces it otherwise.\n\n"
            "--mutation NAME injects a known Raft bug (commit-previous-term, vote-ignores-log,\n"
            "vote-not-persisted, apply-uncommitted, learner-votes, ...); the simulator is\n"
            "expected to catch it. An unknown NAME lists them all with what each does.\n\n"
            "--coverage measures the branch coverage of the Raft core (node/raft) over the run\n"
            "(with any --workers) and names every refusal of the core the seeds never took."
        ),
    )
    p.add_argument("--seeds", type=_positive_int, required=True, metavar="N",
                   help="number of seeds to run (required)")
    p.add_argument("--start", type=_non_negative_int, default=0, metavar="S",
                   help="first seed (default: %(default)s)")
    p.add_argument("--mutation", type=_mutation(_simulator_mutations), metavar="NAME",
                   help="inject a known Raft bug (an unknown NAME lists them)")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="W",
                   help="worker processes (default: %(default)s)")
    p.add_argument("--verbose", action="store_true", help="print progress for every seed")
    p.add_argument("--coverage", action="store_true",
                   help="branch coverage of node/raft over the run, and the refusals never taken "
                        "(needs the coverage package: the dev extra)")
    p.set_defaults(handler=_simulate, command_name="simulate")


def _build_nemesis(commands) -> None:
    p = commands.add_parser(
        "nemesis",
        help="run a real cluster under faults and check the history",
        formatter_class=_Formatter,
        description=(
            "Start a real local cluster, run a workload against it while injecting faults, and\n"
            "check the recorded history (linearizability for register, no lost or phantom\n"
            "elements for set, conserved totals for bank). Exit 0 when every check holds.\n"
            "--history writes Jepsen-shaped JSON lines:\n"
            '  {"process", "type": "invoke"|"ok"|"fail"|"info", "f", "key", "value", "time"}'
        ),
    )
    p.add_argument("--duration", type=_positive_float, default=60.0, metavar="S",
                   help="seconds of workload under faults (default: %(default)g)")
    default_faults = ["kill", "pause", "partition"]
    p.add_argument("--faults", type=_fault_list, default=default_faults, metavar="F[,F...]",
                   help=f"faults to inject, from {','.join(FAULTS)} (default: {','.join(default_faults)})")
    p.add_argument("--workload", choices=WORKLOADS, default="register",
                   help="what the clients do (default: %(default)s)")
    p.add_argument("--seed", type=_non_negative_int, metavar="N",
                   help="seed for the fault schedule and workload (default: random, printed)")
    p.add_argument("--history", metavar="FILE", help="write the history as JSON lines to FILE")
    _add_log_level_option(p, ", here and by every process it starts")
    p.add_argument("--nodes", type=_positive_int, metavar="N",
                   help="node processes (default: 3, or 4 when --faults has member, repair or drain, "
                        "which need a store beyond the 3 replicas of each partition)")
    p.add_argument("--raft-mutation", metavar="NAME", type=_mutation(_raft_mutations),
                   help="testing: start every node with a known Raft bug (tessera node --raft-mutation "
                        "NAME, e.g. learner-votes); the run should then fail")
    p.add_argument("--client-mutation", metavar="NAME", type=_mutation(_client_mutations),
                   help="testing: run the workload with a known client bug (double-append, with "
                        "--workload set); the run should then fail")
    p.set_defaults(handler=_nemesis, command_name="nemesis")


def _build_check(commands) -> None:
    p = commands.add_parser(
        "check",
        help="check a saved history offline (linearizability, set, bank)",
        formatter_class=_Formatter,
        description=(
            "Check a saved history with the nemesis's own checks and print the verdicts; on a\n"
            "failure, the smallest failing window of each bad key. A history written by\n"
            "'tessera nemesis --history' checks as it did in its run (same --model as its\n"
            "--workload). --format jepsen-etcd reads Jepsen's etcd register logs.\n"
            "Exit 0 when every check holds, 1 when one fails (or is undecided within\n"
            "--time-limit), 2 for a usage error or a history that cannot be read."
        ),
    )
    p.add_argument("history", metavar="HISTORY", help="the history file ('-': stdin)")
    p.add_argument("--model", choices=WORKLOADS, default="register",
                   help="what the history is of: register (linearizability per key), set (the set "
                        "workload's checks and linearizability), bank (conserved totals) "
                        "(default: %(default)s)")
    p.add_argument("--format", choices=("jsonl", "jepsen-etcd"), default="jsonl",
                   help="jsonl: Jepsen-shaped JSON lines, as tessera nemesis --history writes them; "
                        "jepsen-etcd: a Jepsen etcd test log, one register (default: %(default)s)")
    p.add_argument("--time-limit", type=_positive_float, metavar="SECONDS", default=CHECK_TIME_LIMIT_S,
                   help="give the linearizability search up after this long: the verdict is then "
                        "UNDECIDED, exit 1 (default: %(default)g, as in tessera nemesis)")
    p.set_defaults(handler=_check, command_name="check")


# -- handlers ------------------------------------------------------------------------------


def _admin(args: argparse.Namespace) -> int:
    from tools.admin import run

    return run(args)


def _not_available(args: argparse.Namespace) -> int:
    print(f"tessera {args.command_name}: {NOT_AVAILABLE}", file=sys.stderr)
    return EXIT_NOT_AVAILABLE


def _node(args: argparse.Namespace) -> int:
    if args.store_id is None:
        print("tessera node: --store-id is required (tessera cluster up assigns them)", file=sys.stderr)
        return EXIT_USAGE
    if args.testing_fsync_is_noop and not args.testing_unsynced_is_lost:
        print("tessera node: --testing-fsync-is-noop needs --testing-unsynced-is-lost", file=sys.stderr)
        return EXIT_USAGE
    from node.server import run

    return run(args)


def _cluster_up(args: argparse.Namespace) -> int:
    from tools.cluster_up import run

    return run(args)


def _bench(args: argparse.Namespace) -> int:
    from tools.bench import main as bench_main

    return bench_main(args)


def _router(args: argparse.Namespace) -> int:
    from router.main import run

    return run(args)


def _kv(args: argparse.Namespace) -> int:
    """tessera kv put|get|delete|scan through the blocking client library."""
    from common.auth import refusal_text, token_from
    from router.client import (
        AccessDeniedError,
        Client,
        DeadlineExceeded,
        InvalidArgumentError,
        RouterUnavailableError,
        TesseraError,
    )

    name = f"tessera {args.command_name}"
    timeout = getattr(args, "timeout", None) or DEFAULT_KV_TIMEOUT
    try:
        tls = _client_tls(args, name)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    token = token_from(getattr(args, "token", None), os.environ)
    if token and tls is None:
        print(f"{name}: --token needs TLS: give --ca, --cert and --key (or ${CA_ENV}, ${CERT_ENV}, ${KEY_ENV}) too",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        client = Client(args.router, deadline_s=timeout, tls=tls, token=token)
    except ValueError as exc:
        print(f"{name}: bad --router {args.router!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            return _KV_HANDLERS[args.kv_command](client, args, name)
    except InvalidArgumentError as exc:
        print(f"{name}: invalid argument: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AccessDeniedError as exc:
        code = exc.code.name if exc.code is not None else "UNAUTHENTICATED"
        print(f"{name}: {refusal_text(code, exc.message, token is not None)}", file=sys.stderr)
        return 1
    except RouterUnavailableError as exc:
        if exc.unreachable:
            print(f"{name}: cannot reach the router at {args.router}: {exc.last_error}"
                  f"{_tls_hint(str(exc.last_error), tls)}", file=sys.stderr)
        else:
            print(f"{name}: the router at {args.router} has no partition for the key "
                  f"(cluster not bootstrapped yet?): {exc.last_error}", file=sys.stderr)
        return 1
    except DeadlineExceeded as exc:
        print(f"{name}: timed out after {timeout:g}s: {exc}", file=sys.stderr)
        return 1
    except TesseraError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1


def _tls_hint(error: str, tls: TlsConfig | None) -> str:
    """What to try when a connection failed the way a TLS mismatch fails ("" otherwise)."""
    from common.tls import mismatch_hint

    return mismatch_hint(error, tls is not None)


def _arg_bytes(text: str) -> bytes:
    # os.fsencode undoes the surrogateescape decoding of argv: non-UTF-8 bytes survive.
    return os.fsencode(text)


def _kv_put(client: Client, args: argparse.Namespace, name: str) -> int:
    client.put(_arg_bytes(args.key), _put_value(args.value, name))
    print("OK")
    return 0


def _put_value(value: str, name: str) -> bytes:
    """VALUE from the command line, or all of stdin, untouched, for STDIN_VALUE (like etcdctl)."""
    if value != STDIN_VALUE:
        return _arg_bytes(value)
    if sys.stdin.isatty():
        print(f"{name}: reading the value from stdin (end it with Ctrl-D)", file=sys.stderr)
    return sys.stdin.buffer.read()


def _kv_get(client: Client, args: argparse.Namespace, name: str) -> int:
    found = client.get(_arg_bytes(args.key), args.consistency, args.max_staleness_ms)
    if found is None:
        print(f"{name}: key {args.key!r} not found", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stdout.buffer.write(found.value)
    if sys.stdout.isatty():
        sys.stdout.buffer.write(b"\n")
    sys.stdout.buffer.flush()
    return 0


def _kv_delete(client: Client, args: argparse.Namespace, name: str) -> int:
    existed = client.delete(_arg_bytes(args.key))
    print("deleted" if existed else "not found (nothing to delete)")
    return 0


def _kv_scan(client: Client, args: argparse.Namespace, name: str) -> int:
    pairs = client.scan(_arg_bytes(args.start), _arg_bytes(args.end), args.limit, consistency=args.consistency)
    out = sys.stdout.buffer
    sys.stdout.flush()
    for key, value, _version in pairs:
        out.write(key + b"\t" + value + b"\n")
    out.flush()
    return 0


_KV_HANDLERS = {"put": _kv_put, "get": _kv_get, "delete": _kv_delete, "scan": _kv_scan}


def _nemesis(args: argparse.Namespace) -> int:
    from tools.nemesis import schedule
    from tools.nemesis.runner import run, usage_problem

    nodes = args.nodes if args.nodes is not None else schedule.default_nodes(args.faults)
    # Every flag is checked before a cluster starts (the mutations' names already were, by
    # the parser: the node's own message for --raft-mutation).
    why = usage_problem(args.workload, args.faults, nodes=nodes, raft_mutation=args.raft_mutation,
                        client_mutation=args.client_mutation, history_path=args.history)
    if why is not None:
        print(f"tessera nemesis: {why}", file=sys.stderr)
        return EXIT_USAGE
    return run(args.duration, args.faults, args.workload, args.seed, args.history, nodes=nodes,
               raft_mutation=args.raft_mutation, client_mutation=args.client_mutation, log_level=args.log_level)


def _check(args: argparse.Namespace) -> int:
    from tools.check import run

    return run(args.history, args.model, args.format, args.time_limit)


def _simulate(args: argparse.Namespace) -> int:
    try:
        from tools.simulator.runner import main as sim_main
    except ModuleNotFoundError as exc:
        # Only a missing simulator is "not available"; a missing import inside it is a bug.
        if exc.name not in ("tools.simulator", "tools.simulator.runner"):
            raise
        print("tessera simulate: not available in this installation (tools/simulator is missing)",
              file=sys.stderr)
        return EXIT_NOT_AVAILABLE
    rc = sim_main(
        seeds=args.seeds,
        start=args.start,
        mutation=args.mutation,
        workers=args.workers,
        verbose=args.verbose,
        coverage=args.coverage,
    )
    return 0 if rc is None else int(rc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tessera command line; returns the process exit status."""
    from tools.lifecycle import die_with_parent

    die_with_parent()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: report, don't exit
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if hasattr(args, "router") or args.command in ("kv", "admin", "bench"):
        args.router = getattr(args, "router", None) or os.environ.get(ROUTER_ENV) or DEFAULT_ROUTER
    if args.command == "admin":
        args.json = getattr(args, "json", False)
    if hasattr(args, "log_level"):  # the commands that run a process which logs: set it up once
        logs.setup(args.log_level, fmt=args.log_format)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
