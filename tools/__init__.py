"""Developer tooling for Tessera (checkers, simulators, harnesses)."""
