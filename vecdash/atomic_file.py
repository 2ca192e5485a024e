"""Writing a file so that its final name only ever holds a whole file: checks before any work (a
folder, an existing file without ``force``, a missing folder), a temporary name beside the target,
a rename at the end, and an OSError (full disk, no permission) turned into a message that says
what to do. Used by the exports (vecdash.export, vecdash.pg_dump) and the HTML reports.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from vecdash.errors import InvalidInput

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


def check_target(path: str | Path, *, force: bool = False) -> Path:
    """The path to write, refused before any work when it cannot or should not be written."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise InvalidInput(f"{target} is a folder. Give a file name, e.g. {target / 'export'}.")
    if not target.parent.is_dir():
        raise InvalidInput(f"The folder {target.parent} does not exist. Create it first, or "
                           "choose another place.")
    if target.exists() and not force:
        raise InvalidInput(f"{target} already exists. Choose another name, or overwrite it "
                           "(command line: --force).")
    if not os.access(target.parent, os.W_OK):
        raise InvalidInput(f"Cannot write to the folder {target.parent} (permission denied). "
                           "Choose a folder you can write to.")
    return target


def write_problem(target: Path, detail: str, code: int | None = None) -> InvalidInput:
    """The error for a write that failed (an OSError's errno, or a tool's message)."""
    lower = detail.lower()
    if code in _FULL or "no space left" in lower or "file too large" in lower \
            or "quota" in lower:
        return InvalidInput(
            f"The disk is full (or the file is over a size limit) while writing {target}: "
            f"{detail}. Nothing was written under that name. Free some space or choose another "
            "place."
        )
    if code in _DENIED or "permission denied" in lower or "read-only file system" in lower:
        return InvalidInput(f"Cannot write {target}: {detail}. Choose a folder you can write to.")
    return InvalidInput(f"Could not write {target}: {detail}. Nothing was written under that "
                        "name. Choose another place and try again.")


@contextmanager
def atomic_output(path: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed to ``path``, on
    any failure removed (the final name is never left half-written)."""
    target = check_target(path, force=force)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        yield temporary
        os.replace(temporary, target)
    except OSError as exc:
        raise write_problem(target, exc.strerror or str(exc), exc.errno) from exc
    finally:
        with suppress(OSError):
            temporary.unlink(missing_ok=True)
