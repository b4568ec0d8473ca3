"""Small filesystem helpers shared by every writer of host files."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from pixsim_host.errors import HostError

_WHAT_TO_DO = {
    errno.ENOSPC: "free some space there and retry",
    errno.EDQUOT: "free some space (your disk quota is full) and retry",
    errno.EROFS: "the filesystem is read-only: remount it writable or use another directory",
    errno.EACCES: "check the directory's owner and permissions",
    errno.EPERM: "check the directory's owner and permissions",
}


class WriteError(HostError, OSError):
    """Writing a file failed (a full disk, a read-only filesystem): one line naming the path.

    Also an OSError, so code that already handles a failed write keeps doing so.
    """

    def __init__(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        todo = _WHAT_TO_DO.get(exc.errno or 0, "check the disk and the directory")
        HostError.__init__(self, f"cannot write {path}: {reason}; {todo}")
        self.errno = exc.errno
        self.strerror = exc.strerror
        self.filename = str(path)


def write_error(path: Path, exc: OSError) -> WriteError:
    """``exc`` (raised writing ``path``) as a one-line error; a WriteError is kept as it is."""
    return exc if isinstance(exc, WriteError) else WriteError(path, exc)


def atomic_write(path: Path, content: str | bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` so readers see the old file or the new one, never half of one.

    The temporary file is created with ``mode`` from the start, so a secret file is
    never readable by others, not even for a moment. Any failure (a full disk above all)
    leaves the old file untouched and is a WriteError naming ``path``.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
