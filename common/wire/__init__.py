"""The gRPC edge every speaker (node, router, client) shares: structured errors
(``errors``) and the domain model to and from protobuf (``descriptors``)."""
