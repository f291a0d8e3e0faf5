"""The replicated state machine: a tiny KV map and its command encoding.

Commands are compact JSON objects carried in NORMAL entries::

    {"id": 17, "f": "put", "k": "a", "v": "3-5"}
    {"id": 18, "f": "cas", "k": "a", "e": "3-5", "n": "1-2"}   (e = null: must be absent)
    {"id": 19, "f": "get", "k": "a"}                           (a read through the log)
    {"id": -3, "f": "probe"}                                   (the liveness probe)

Empty entries (a new leader's no-op) and conf-change entries change nothing
but still advance ``applied`` and the ``chain`` hash.  ``chain`` folds in
every applied (index, term, type, data): two replicas that applied the same
entries hold the same chain, which lets the invariant checker compare a
snapshot installed on one replica with what the others applied.
"""

from __future__ import annotations

import hashlib
import json

from node.raft import Entry, EntryType

GENESIS_CHAIN = hashlib.blake2b(b"tessera-sim-genesis", digest_size=12).hexdigest()


def encode_command(cmd: dict) -> bytes:
    return json.dumps(cmd, separators=(",", ":")).encode()


def decode_command(data: bytes) -> dict | None:
    if not data:
        return None
    return json.loads(data)


def command_id(entry: Entry) -> int | None:
    """The client op id carried by an entry, or None (no-op, conf change)."""
    if entry.type != EntryType.NORMAL or not entry.data:
        return None
    return json.loads(entry.data)["id"]


def fold_chain(chain: str, entry: Entry) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(chain.encode())
    h.update(b"%d:%d:%d:" % (entry.index, entry.term, int(entry.type)))
    h.update(entry.data)
    return h.hexdigest()


class KVStateMachine:
    """key -> (value, version); ``applied`` is the index of the last applied entry."""

    __slots__ = ("applied", "chain", "data")

    def __init__(self, applied: int = 0, chain: str = GENESIS_CHAIN, data: dict | None = None) -> None:
        self.data: dict[str, tuple[str, int]] = data if data is not None else {}
        self.applied = applied
        self.chain = chain

    def get(self, key: str) -> str | None:
        cur = self.data.get(key)
        return None if cur is None else cur[0]

    def apply(self, entry: Entry) -> tuple[int | None, str, object]:
        """Apply one committed entry; returns (op id, outcome, value) for the client."""
        self.applied = entry.index
        self.chain = fold_chain(self.chain, entry)
        if entry.type != EntryType.NORMAL or not entry.data:
            return None, "ok", None
        cmd = json.loads(entry.data)
        f = cmd["f"]
        if f == "put":
            self._write(cmd["k"], cmd["v"])
            return cmd["id"], "ok", cmd["v"]
        if f == "cas":
            if self.get(cmd["k"]) == cmd["e"]:
                self._write(cmd["k"], cmd["n"])
                return cmd["id"], "ok", [cmd["e"], cmd["n"]]
            return cmd["id"], "fail", [cmd["e"], cmd["n"]]
        if f == "get":
            return cmd["id"], "ok", self.get(cmd["k"])
        return cmd["id"], "ok", None  # probe

    def _write(self, key: str, value: str) -> None:
        cur = self.data.get(key)
        self.data[key] = (value, 1 if cur is None else cur[1] + 1)

    # -- snapshots ---------------------------------------------------------

    def snapshot_bytes(self) -> bytes:
        kv = {k: list(self.data[k]) for k in sorted(self.data)}
        return json.dumps({"applied": self.applied, "chain": self.chain, "kv": kv}, separators=(",", ":")).encode()

    @classmethod
    def restore(cls, blob: bytes) -> KVStateMachine:
        if not blob:
            return cls()
        obj = json.loads(blob)
        data = {k: (v[0], v[1]) for k, v in obj["kv"].items()}
        return cls(obj["applied"], obj["chain"], data)
