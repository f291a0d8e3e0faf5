"""Tessera's data plane: the storage node and, in node/raft/, the sans-I/O consensus core."""
