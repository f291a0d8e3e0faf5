"""Tessera's deterministic Raft simulator (see README.md).

``run_seed(seed, mutation=None)`` runs one seed; ``main(...)`` backs
``tessera simulate``.
"""

from .mutations import MUTATIONS
from .runner import SeedResult, main, run_seed

__all__ = ["MUTATIONS", "SeedResult", "main", "run_seed"]
