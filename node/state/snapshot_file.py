"""The byte format of a partition snapshot in flight: the raw LMDB pairs of its range.

A snapshot is a sequence of records ``[u32 len(key)][u32 len(value)][key][value]``
where value is the stored form (version prefix + user value).  The sender
produces it chunk by chunk from one LMDB read transaction; the receiver
spools it to a file (the transport checks size and CRC32C) and installs it
from there in one write transaction.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from node.fs import Files

_REC = struct.Struct("<II")
_READ = 1 << 20


def snapshot_stream(chunks: Iterable[list[tuple[bytes, bytes]]]) -> Iterator[bytes]:
    """Encode LMDB (key, value) chunks as the bytes to send, one piece per chunk."""
    for chunk in chunks:
        parts = []
        for k, v in chunk:
            parts.append(_REC.pack(len(k), len(v)))
            parts.append(k)
            parts.append(v)
        yield b"".join(parts)


def read_snapshot_file(files: Files, path: str, chunk: int = 1024) -> Iterator[list[tuple[bytes, bytes]]]:
    """Decode a spooled snapshot file back into (key, value) chunks."""
    with files.open_read(path) as f:
        buf = b""
        pos = 0
        batch: list[tuple[bytes, bytes]] = []
        eof = False
        while True:
            avail = len(buf) - pos
            if avail < _REC.size or avail < _REC.size + sum(_REC.unpack_from(buf, pos)):
                if eof:
                    if avail:
                        raise ValueError(f"snapshot file {path} ends inside a record")
                    break
                more = f.read(_READ)
                eof = not more
                buf = buf[pos:] + more  # one copy per refill, not per record
                pos = 0
                continue
            klen, vlen = _REC.unpack_from(buf, pos)
            kstart = pos + _REC.size
            vstart = kstart + klen
            pos = vstart + vlen
            batch.append((buf[kstart:vstart], buf[vstart:pos]))
            if len(batch) >= chunk:
                yield batch
                batch = []
        if batch:
            yield batch
