"""A node's applied state: the write commands in the Raft log and the LMDB store they apply to."""
