"""Checks on the files a user names, made before anything opens them.

Opening a named pipe blocks until someone writes to it and a device such as /dev/zero
never ends, so configs and checkpoints are read only when they are regular files.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def special_kind(path: str | Path) -> str | None:
    """What `path` is when it exists but is not a regular file (links followed); None otherwise."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in KINDS if test(mode)), "not a regular file")
