"""What the load generator asks for: the keys, which key next (uniform or zipfian), which operation.

Keys are 16 bytes: one leading byte spreading key numbers evenly over the byte key space (so
pre-split partitions, which split that space by its first byte, all get load), then the key
number in 15 decimal digits. The same key numbers name the same keys for every target, so a
Tessera run and an etcd run touch identical keys.

The workloads are the YCSB core mixes (A 50/50 read/update, B 95/5, C read only) plus ``write``
(puts only, the figure Tessera's issue tracks), ``scan`` (short range scans from a chosen key)
and ``cas`` (read, then a compare-and-set naming the version read: a read-modify-write).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

KEY_SIZE = 16
SCAN_MAX = 10  # a scan reads 1..SCAN_MAX keys (YCSB's short ranges)

# Operation names a mix is made of.
READ, UPDATE, SCAN, CAS = "read", "update", "scan", "cas"

# Share of each operation per workload; each mix sums to 1.
WORKLOADS: dict[str, dict[str, float]] = {
    "write": {UPDATE: 1.0},
    "a": {READ: 0.5, UPDATE: 0.5},
    "b": {READ: 0.95, UPDATE: 0.05},
    "c": {READ: 1.0},
    "scan": {SCAN: 1.0},
    "cas": {CAS: 1.0},
}


def key_of(i: int) -> bytes:
    """Key number ``i`` (0-based): a spreading first byte, then ``i`` in 15 digits (16 bytes)."""
    return bytes([(i * 131) % 256]) + b"%015d" % i


def needs_preload(workload: str) -> bool:
    """Whether the workload reads: then every key is written before the measurement starts, so
    reads find values and a CAS has a version to name."""
    return any(op != UPDATE for op in WORKLOADS[workload])


class OpMix:
    """Draws operations in a workload's proportions (one uniform draw against cumulative shares)."""

    def __init__(self, workload: str) -> None:
        if workload not in WORKLOADS:
            raise ValueError(f"unknown workload {workload!r} (one of {', '.join(WORKLOADS)})")
        self._ops: list[tuple[float, str]] = []
        total = 0.0
        for op, share in WORKLOADS[workload].items():
            total += share
            self._ops.append((total, op))

    def next(self, rng: random.Random) -> str:
        u = rng.random()
        for bound, op in self._ops:
            if u < bound:
                return op
        return self._ops[-1][1]  # rounding: u is within a hair of 1.0


class KeyChooser(Protocol):
    """Picks the next key number in [0, keys)."""

    def next(self, rng: random.Random) -> int: ...


class Uniform:
    """Every key number equally likely."""

    def __init__(self, keys: int) -> None:
        if keys < 1:
            raise ValueError("keys must be >= 1")
        self.keys = keys

    def next(self, rng: random.Random) -> int:
        return rng.randrange(self.keys)


# YCSB's ScrambledZipfianGenerator: a zipfian over a huge item space (10^10 items, whose zeta
# constant YCSB precomputed) hashed with FNV-1a onto the real key count. Popularity follows the
# zipfian law, but the popular items are scattered over the key numbers instead of being the
# first few, so hot keys land on every partition. It also needs no O(keys) zeta computation.
ZIPFIAN_CONSTANT = 0.99
_ITEM_COUNT = 10_000_000_000
_ZETAN = 26.46902820178302  # zeta(10^10, 0.99), YCSB's ScrambledZipfianGenerator.ZETAN
_FNV_OFFSET_BASIS_64 = 0xCBF29CE484222325
_FNV_PRIME_64 = 1099511628211
_MASK64 = (1 << 64) - 1


def fnvhash64(value: int) -> int:
    """YCSB's Utils.fnvhash64: FNV-1a over the 8 bytes of ``value``, as a non-negative long."""
    h = _FNV_OFFSET_BASIS_64
    for _ in range(8):
        h ^= value & 0xFF
        h = (h * _FNV_PRIME_64) & _MASK64
        value >>= 8
    if h >= 1 << 63:  # Java's Math.abs of the signed long
        h = (1 << 64) - h
    return h & _MASK64


def zeta(n: int, theta: float) -> float:
    """sum(1 / i**theta for i in 1..n): the zipfian normalisation constant."""
    return sum(1.0 / (i**theta) for i in range(1, n + 1))


class Zipfian:
    """YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record synthetic
    databases"): item ``i`` (0-based) is drawn with probability proportional to 1/(i+1)^theta,
    exactly for items 0 and 1 and by Gray's closed-form approximation for the rest."""

    def __init__(self, items: int, theta: float = ZIPFIAN_CONSTANT, zetan: float | None = None) -> None:
        if items < 1:
            raise ValueError("items must be >= 1")
        self.items = items
        self.theta = theta
        self.zetan = zeta(items, theta) if zetan is None else zetan
        zeta2 = zeta(2, theta)
        self._alpha = 1.0 / (1.0 - theta)
        # With two items or fewer the first two branches of next() cover every draw and eta
        # (0/0 then) is never used.
        self._eta = (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan) if items > 2 else 0.0
        self._half_pow_theta = 1 + 0.5**theta

    def next(self, rng: random.Random) -> int:
        u = rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < self._half_pow_theta:
            return 1
        return min(self.items - 1, int(self.items * (self._eta * u - self._eta + 1) ** self._alpha))


class ScrambledZipfian:
    """Zipfian popularity (constant 0.99) with the popular key numbers scattered (FNV hash)."""

    def __init__(self, keys: int) -> None:
        if keys < 1:
            raise ValueError("keys must be >= 1")
        self.keys = keys
        self._gen = Zipfian(_ITEM_COUNT, ZIPFIAN_CONSTANT, zetan=_ZETAN)

    def next(self, rng: random.Random) -> int:
        return fnvhash64(self._gen.next(rng)) % self.keys


DISTRIBUTIONS = ("uniform", "zipfian")


def chooser(distribution: str, keys: int) -> KeyChooser:
    """The key chooser for ``--distribution``."""
    if distribution == "uniform":
        return Uniform(keys)
    if distribution == "zipfian":
        return ScrambledZipfian(keys)
    raise ValueError(f"unknown distribution {distribution!r} (one of {', '.join(DISTRIBUTIONS)})")


@dataclass(frozen=True)
class Op:
    """One operation to issue: what, on which key, and for a scan how many keys."""

    kind: str
    key: bytes
    scan_limit: int = 0


class OpStream:
    """A worker's sequence of operations: the mix picks the kind, the chooser the key."""

    def __init__(self, workload: str, distribution: str, keys: int, seed: int) -> None:
        self._mix = OpMix(workload)
        self._keys = chooser(distribution, keys)
        self._rng = random.Random(seed)

    def next(self) -> Op:
        kind = self._mix.next(self._rng)
        key = key_of(self._keys.next(self._rng))
        return Op(kind, key, self._rng.randint(1, SCAN_MAX) if kind == SCAN else 0)
