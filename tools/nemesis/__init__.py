"""``tessera nemesis``: a real multi-process cluster under faults, with checked histories.

The simulator (``tools/simulator``) proves the consensus core; this package proves the
product: real node and router processes, the real client library, faults injected where they
happen in production (processes killed and paused, the network between nodes cut or slowed,
disks that fail or crawl), every client operation recorded and checked afterwards.

Modules, one concern each:

- :mod:`~tools.nemesis.proxy`     fault-injecting TCP proxies, one per directed node pair
- :mod:`~tools.nemesis.schedule`  the fault schedule: a pure function of the seed
- :mod:`~tools.nemesis.faults`    carries out schedule steps against the running cluster
- :mod:`~tools.nemesis.workloads` concurrent clients recording Jepsen-shaped histories
- :mod:`~tools.nemesis.client_mutations` known client bugs the checks must catch (testing only)
- :mod:`~tools.nemesis.histories` what recorders and checkers of a history agree on
- :mod:`~tools.nemesis.history_checks` the verdicts on a history (online, and ``tessera check``)
- :mod:`~tools.nemesis.checks`    recovery and health checks against the live cluster
- :mod:`~tools.nemesis.runner`    ``run()``: cluster + proxies + workload + schedule + checks
"""
