"""Writing a user's files all or nothing: a temporary file in the same folder, renamed over the
target, so a reader (or a crash) sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(path: str | Path, data: str | bytes, *, fsync: bool = False) -> None:
    """Write `data` (text as UTF-8) to `path`, replacing it in one step.  The file gets the
    permissions an ordinary new file would (mkstemp makes temporary files private).  `fsync`:
    on disk before the rename (for caches other processes read).  Raises OSError."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
