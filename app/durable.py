"""Writes that a crash or a power cut cannot leave empty, half-written or missing.

A file or folder is written under a hidden name, synced, then renamed into place, and the folder
that holds it synced: the rename is atomic, the first sync makes the new name point at the data
(not at an empty file, which XFS and ext4 without data=ordered can otherwise leave after a power
cut), the last makes the rename itself survive one. A folder that replaces another (an export) is
swapped with it in one step (Linux's renameat2 RENAME_EXCHANGE), so there is never a moment with
neither; where the filesystem cannot swap (NFS, say), the old one is moved aside first and put back
by the next writer if the new one never arrived.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from pathlib import Path

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)  # glibc 2.28 and later


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        replace_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(tmp: Path, path: Path) -> None:
    """Move the complete file `tmp` to `path`, in the same folder."""
    sync(tmp)
    os.replace(tmp, path)
    sync(path.parent)


def replace_folder(new: Path, final: Path) -> None:
    """Put the complete folder `new` at `final` (in the same folder), replacing what was there."""
    aside = final.with_name(f".old-{final.name}")
    recover_folder(final)
    sync_tree(new)
    if final.exists() and _exchange(new, final):
        sync(final.parent)
        shutil.rmtree(new)  # now the old one
        return
    if final.exists():
        os.rename(final, aside)
    os.rename(new, final)
    sync(final.parent)
    shutil.rmtree(aside, ignore_errors=True)


def recover_folder(final: Path) -> None:
    """Put back the folder that replace_folder moved aside, if the new one never took its place."""
    aside = final.with_name(f".old-{final.name}")
    if aside.exists() and not final.exists():
        os.rename(aside, final)
    shutil.rmtree(aside, ignore_errors=True)


def sync_tree(folder: Path) -> None:
    """Every file below `folder`, then each folder, so that all of it is on disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            sync(Path(root) / name)
        sync(Path(root))


def sync(path: Path) -> None:
    """fsync one file or folder (a folder's entries: what was renamed into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the kernel or filesystem cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
