"""Tessera's control plane: placement, routing, the KV proxy and the client library."""
