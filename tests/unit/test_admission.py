"""node.admission: each bound refuses exactly past its limit, says which limit in its answer
(ServerBusy, RESOURCE_EXHAUSTED, with the retry-after hint), and gives back what settles."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from common.wire.errors import WireError
from node.admission import ITEM_COST_BYTES, Admission
from node.settings import AdmissionLimits
from tesserapb import kv_pb2


def test_proposals_are_bounded_per_partition_and_per_node() -> None:
    async def main() -> None:
        adm = Admission(AdmissionLimits(partition_proposals=3, node_proposals=5, retry_after_ms=70))
        loop = asyncio.get_running_loop()
        adm.admit_proposal(2)
        with pytest.raises(WireError) as exc:
            adm.admit_proposal(3)
        err = exc.value
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and err.error is not None
        assert err.error.server_busy.backoff_ms == 70 and "limit 3" in err.error.server_busy.reason
        futs = [loop.create_future() for _ in range(5)]
        for f in futs:
            adm.admit_proposal(0)
            adm.admitted(f)
        with pytest.raises(WireError, match="limit 5"):
            adm.admit_proposal(0)
        futs[0].set_result(None)
        futs[1].set_exception(RuntimeError("lost"))
        futs[1].exception()
        await asyncio.sleep(0)  # done callbacks run on the loop
        assert adm.proposals == 3
        adm.admit_proposal(0)
        assert adm.refused == 2

    asyncio.run(main())


def _req(n: int, value_bytes: int) -> kv_pb2.StreamRequest:
    req = kv_pb2.StreamRequest()
    for i in range(n):
        item = req.requests.add(request_id=i + 1)
        item.put.key = b"k%d" % i
        item.put.value = b"x" * value_bytes
    return req


def test_a_stream_is_refused_past_its_unanswered_bytes_and_released_as_it_answers() -> None:
    adm = Admission(AdmissionLimits(stream_bytes=10_000))
    budget = adm.stream()
    req = _req(4, 3000)
    share = budget.share(req)
    assert 3000 < share < 3200
    outs = [budget.admit(item, share) for item in req.requests]
    assert outs[:3] == [None, None, None]
    refused = outs[3]
    assert refused is not None and refused.request_id == 4
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and refused.error.HasField("server_busy")
    assert "limit 10000" in refused.message
    budget.answered([kv_pb2.StreamResponseItem(request_id=1), refused])  # a refusal was never charged
    assert budget.unanswered == 2 * share
    assert budget.admit(req.requests[3], share) is None


def test_snapshots_are_bounded_each_way() -> None:
    adm = Admission(AdmissionLimits(snapshots_out=1, snapshots_in=2))
    assert adm.admit_snapshot_out() and not adm.admit_snapshot_out()
    adm.snapshot_out_done()
    assert adm.admit_snapshot_out()
    assert adm.admit_snapshot_in() and adm.admit_snapshot_in() and not adm.admit_snapshot_in()
    adm.snapshot_in_done()
    assert adm.admit_snapshot_in()


def test_a_bound_of_zero_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="stream_bytes"):
        AdmissionLimits(stream_bytes=0)


def test_many_tiny_items_on_a_stream_are_bounded_by_count_too() -> None:
    """An empty get that must wait holds a task: items are charged at least ITEM_COST_BYTES, so
    a message of 100,000 of them is not let in whole under a 64 MiB bound."""
    adm = Admission(AdmissionLimits(stream_bytes=64 << 20))
    budget = adm.stream()
    req = kv_pb2.StreamRequest()
    for i in range(100_000):
        req.requests.add(request_id=i + 1).get.key = b""
    share = budget.share(req)
    assert share == ITEM_COST_BYTES
    admitted = sum(budget.admit(item, share) is None for item in req.requests)
    assert admitted == (64 << 20) // ITEM_COST_BYTES
