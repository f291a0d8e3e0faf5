"""The placement file stays readable across refactors.

``PLACEMENT_JSON`` below is a ``placement.json`` exactly as ``codec.table_to_json`` wrote it
before the partition-descriptor records (Epoch, Role, ReplicaDesc, Descriptor) moved from
router/placement/model.py to common/descriptor.py. The codec names records by class name, so
a move or rename that forgets the registry would make every router's data dir unreadable;
this test decodes the old bytes and checks that encoding them again gives the same bytes,
but for record fields added since (each must then be at its default: an old file knew nothing
of them).

The table behind it: two stores, two single-replica partitions with known leaders and
progress, and a pending learner addition (an AddReplica for the leader and a CreateReplica
for the target store), so every descriptor record and both roles appear.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from common.descriptor import Descriptor, Epoch, ReplicaDesc, Role
from router.placement import codec
from router.placement.model import AddReplica, CreateReplica


def test_a_placement_file_from_before_the_move_decodes_and_re_encodes_identically() -> None:
    table = codec.table_from_json(PLACEMENT_JSON)
    again = json.loads(codec.table_to_json(table))
    assert without_newer_fields(again, json.loads(PLACEMENT_JSON)) == json.loads(PLACEMENT_JSON)
    assert sorted(table.stores) == [1, 2] and sorted(table.partitions) == [1, 2]
    first = table.partitions[1].descriptor
    assert first == Descriptor(1, b"", b"\x80", Epoch(1, 1), (ReplicaDesc(1, 1, Role.VOTER),))
    assert table.partitions[1].leader_store_id == 1 and table.partitions[1].term == 2
    add, create = (table.operations[i].action for i in (3, 4))
    assert add == AddReplica(ReplicaDesc(2, 3, Role.LEARNER))
    assert isinstance(create, CreateReplica) and create.descriptor.replicas[1].role is Role.LEARNER
    second = table.locate(b"\x80")
    assert second is not None and second.id == 2


def without_newer_fields(new: Any, old: Any) -> Any:
    """``new`` without the record fields ``old`` lacks, each checked to be at its default."""
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [without_newer_fields(n, o) for n, o in zip(new, old)]
    if not (isinstance(new, dict) and isinstance(old, dict)):
        return new
    out = {}
    for key, value in new.items():
        if key in old:
            out[key] = without_newer_fields(value, old[key])
            continue
        assert "_t" in new, f"{key} appeared outside a record"
        (f,) = [f for f in dataclasses.fields(codec._TYPES[new["_t"]]) if f.name == key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert codec.from_json_value(value) == (frozenset(default) if isinstance(default, frozenset) else default)
    return out


PLACEMENT_JSON = b"""{
 "format": 1,
 "next_store_id": 3,
 "next_partition_id": 3,
 "next_replica_id": 4,
 "next_operation_id": 5,
 "bootstrapped": true,
 "stores": [
  {
   "_t": "StoreInfo",
   "id": 1,
   "address": "127.0.0.1:7200",
   "state": {
    "_e": "StoreState",
    "v": 1
   },
   "last_heartbeat_ms": 2000,
   "replica_count": 1,
   "leader_count": 1,
   "capacity_bytes": 0,
   "used_bytes": 0,
   "hosted": {
    "_s": [
     1
    ]
   },
   "hosted_replicas": {
    "_d": [
     [
      1,
      1
     ]
    ]
   }
  },
  {
   "_t": "StoreInfo",
   "id": 2,
   "address": "127.0.0.1:7201",
   "state": {
    "_e": "StoreState",
    "v": 1
   },
   "last_heartbeat_ms": 2000,
   "replica_count": 1,
   "leader_count": 1,
   "capacity_bytes": 0,
   "used_bytes": 0,
   "hosted": {
    "_s": [
     2
    ]
   },
   "hosted_replicas": {
    "_d": [
     [
      2,
      2
     ]
    ]
   }
  }
 ],
 "partitions": [
  {
   "_t": "PartitionInfo",
   "descriptor": {
    "_t": "Descriptor",
    "id": 1,
    "start": {
     "_b": ""
    },
    "end": {
     "_b": "80"
    },
    "epoch": {
     "_t": "Epoch",
     "conf_ver": 1,
     "version": 1
    },
    "replicas": [
     {
      "_t": "ReplicaDesc",
      "store_id": 1,
      "replica_id": 1,
      "role": {
       "_e": "Role",
       "v": 0
      }
     }
    ]
   },
   "leader_store_id": 1,
   "term": 2,
   "progress": {
    "_d": [
     [
      1,
      {
       "_t": "ReplicaProgress",
       "match": 5,
       "applied": 5
      }
     ]
    ]
   },
   "size_bytes": 0,
   "load": 0.0
  },
  {
   "_t": "PartitionInfo",
   "descriptor": {
    "_t": "Descriptor",
    "id": 2,
    "start": {
     "_b": "80"
    },
    "end": {
     "_b": ""
    },
    "epoch": {
     "_t": "Epoch",
     "conf_ver": 1,
     "version": 1
    },
    "replicas": [
     {
      "_t": "ReplicaDesc",
      "store_id": 2,
      "replica_id": 2,
      "role": {
       "_e": "Role",
       "v": 0
      }
     }
    ]
   },
   "leader_store_id": 2,
   "term": 2,
   "progress": {
    "_d": [
     [
      2,
      {
       "_t": "ReplicaProgress",
       "match": 5,
       "applied": 5
      }
     ]
    ]
   },
   "size_bytes": 0,
   "load": 0.0
  }
 ],
 "operations": [
  {
   "_t": "PendingOperation",
   "id": 3,
   "partition_id": 1,
   "epoch": {
    "_t": "Epoch",
    "conf_ver": 1,
    "version": 1
   },
   "action": {
    "_t": "AddReplica",
    "replica": {
     "_t": "ReplicaDesc",
     "store_id": 2,
     "replica_id": 3,
     "role": {
      "_e": "Role",
      "v": 1
     }
    }
   },
   "created_ms": 2000,
   "last_sent_ms": 0,
   "last_sent_to": 0
  },
  {
   "_t": "PendingOperation",
   "id": 4,
   "partition_id": 1,
   "epoch": {
    "_t": "Epoch",
    "conf_ver": 1,
    "version": 1
   },
   "action": {
    "_t": "CreateReplica",
    "store_id": 2,
    "replica_id": 3,
    "bootstrap": false,
    "descriptor": {
     "_t": "Descriptor",
     "id": 1,
     "start": {
      "_b": ""
     },
     "end": {
      "_b": "80"
     },
     "epoch": {
      "_t": "Epoch",
      "conf_ver": 1,
      "version": 1
     },
     "replicas": [
      {
       "_t": "ReplicaDesc",
       "store_id": 1,
       "replica_id": 1,
       "role": {
        "_e": "Role",
        "v": 0
       }
      },
      {
       "_t": "ReplicaDesc",
       "store_id": 2,
       "replica_id": 3,
       "role": {
        "_e": "Role",
        "v": 1
       }
      }
     ]
    }
   },
   "created_ms": 2000,
   "last_sent_ms": 0,
   "last_sent_to": 0
  }
 ]
}"""
