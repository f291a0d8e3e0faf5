"""Tessera's deterministic Raft simulator (see README.md).

``run_seed(seed, mutation=None)`` runs one seed; ``main(...)`` backs
``tessera simulate``.
"""

from .mutations import describe as describe_mutations
from .runner import SeedResult, main, run_seed

__all__ = ["SeedResult", "describe_mutations", "main", "run_seed"]
