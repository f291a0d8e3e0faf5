"""The node's durable files: the few file-system calls the WAL and the snapshot spool make.

:class:`~node.fs.api.Files` is the interface; :data:`OS_FILES` (:mod:`node.fs.os_files`)
is the real file system, used unless a test asks for something else.

See docs/decisions.md D2.
"""

from .api import AppendFile, FileLock, Files
from .os_files import OS_FILES, OsFiles

__all__ = ["OS_FILES", "AppendFile", "FileLock", "Files", "OsFiles"]
