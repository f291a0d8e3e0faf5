"""``tessera bench``: one load generator for Tessera and for etcd (docs/cli.md, `tessera bench`)."""

from tools.bench.run import main

__all__ = ["main"]
