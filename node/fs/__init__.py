"""The node's durable files: the few file-system calls the WAL and the snapshot spool make.

:class:`~node.fs.api.Files` is the interface; :data:`OS_FILES` (:mod:`node.fs.os_files`)
is the real file system, used unless a test asks for something else.
:mod:`node.fs.unsynced_lost` is the testing-only implementation behind ``tessera node
--testing-unsynced-is-lost``; the unit tests' simulated disk lives in
``tests/support/power_cut.py``.

See docs/decisions.md D2 (the file interface and the power-cut model).
"""

from .api import AppendFile, FileLock, Files
from .os_files import OS_FILES, OsFiles

__all__ = ["OS_FILES", "AppendFile", "FileLock", "Files", "OsFiles"]
