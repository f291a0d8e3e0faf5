"""The KV wire's framing (common/wire/kv_frames.py): frames cut out of arbitrary chunks, in
order, and an oversized length refused before its payload is buffered."""

from __future__ import annotations

import pytest

from common.wire import kv_frames as kf


def test_frames_come_out_whole_and_in_order_however_the_bytes_are_cut() -> None:
    frames = [(kf.HELLO, b"hi"), (kf.REQUEST, b""), (kf.REQUEST, bytes(range(256)) * 40), (kf.END, b"x")]
    stream = b"".join(kf.frame(k, p) for k, p in frames)
    for cut in (1, 2, 5, 7, 4096, len(stream)):
        reader = kf.FrameReader()
        got: list[tuple[int, bytes]] = []
        for i in range(0, len(stream), cut):
            got.extend(reader.feed(stream[i : i + cut]))
        assert got == frames, cut
        assert not reader.buf  # nothing left over


def test_a_partial_frame_waits_for_the_rest() -> None:
    reader = kf.FrameReader()
    whole = kf.frame(kf.ANSWER, b"abcdef")
    assert list(reader.feed(whole[:-1])) == []
    assert list(reader.feed(whole[-1:])) == [(kf.ANSWER, b"abcdef")]


def test_a_length_over_the_limit_is_refused_from_its_header_alone() -> None:
    reader = kf.FrameReader(limit=100)
    good = kf.frame(kf.REQUEST, b"ok")
    header_only = kf.HEADER.pack(101, kf.REQUEST)
    got: list[tuple[int, bytes]] = []
    with pytest.raises(kf.FrameTooLarge) as e:
        for f in reader.feed(good + header_only):
            got.append(f)
    assert got == [(kf.REQUEST, b"ok")]  # what came before is still delivered
    assert e.value.size == 101 and e.value.limit == 100
    assert "over the limit of 100 bytes" in str(e.value)
    assert list(kf.FrameReader(limit=100).feed(kf.frame(kf.REQUEST, b"x" * 100))) == [(kf.REQUEST, b"x" * 100)]


def test_packed_cuts_runs_in_order_within_the_limit_and_lets_items_go() -> None:
    sized = [("a", 3), ("b", 4), ("c", 10), ("d", 1), ("e", 2)]
    runs = list(kf.packed(sized, limit=8))
    assert runs == [(["a", "b"], 7), (["c"], 10), (["d", "e"], 3)]  # an item over the limit goes alone
    assert sized == []  # emptied as it went
