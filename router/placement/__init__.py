"""The placement state: stores, partitions, leaders, epochs and pending operations.

``model`` holds the typed records, ``commands`` the serializable mutations, ``table`` the pure
state machine that applies them (no I/O, no clock: time arrives inside the commands, so the
same command log replayed anywhere gives the same table — which is what lets a later issue
replicate the placement group through the Raft core). ``codec`` and ``persist`` put the table
on disk, ``convert`` maps records to and from the wire types, ``runtime`` drives the table
for the router process (apply, persist, bootstrap), and ``config`` holds its tunables with their
defaults.
"""
