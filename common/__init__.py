"""What node, router and client share, and nothing else: the domain types of the partition
map, the wire edge (structured gRPC errors and protobuf conversions), the backoff policy, and
process plumbing (the event loop, logging). It imports neither ``node`` nor ``router`` (nor
``tools``): tests/unit/test_layering.py checks.

See docs/decisions.md D10 (one domain model) and D17 (why this package exists).
"""
