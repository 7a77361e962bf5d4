"""Atomic writes of run artefacts, and one line for every way a write can fail.

Everything a run writes that a later command reads back (the checkpoint, the features cache,
``metrics.json``, ``config.json``) goes through :func:`atomic_write_bytes`, :func:`atomic_write_text`
or :func:`atomic_torch_save`: the data goes to ``NAME.tmp`` in the same directory, is flushed and
fsynced, and is renamed over ``NAME``. A process killed half-way leaves the previous file whole (and
at worst a ``NAME.tmp``, which :func:`remove_partial_writes` clears on the next command that looks
at the run). A failed write removes its temporary file and raises :class:`DiskWriteError`: one line
naming the file, the cause (a full disk, a read-only file system, ...) and the fix.

torch.save is handed an open Python file rather than a path: with a path, torch's zip writer turns a
full disk into an opaque ``inline_container.cc`` RuntimeError without an errno.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any, Callable, IO

from ssl_bench.errors import SSLBenchError

#: Suffix of a file being written; a leftover one is a write that was killed.
PARTIAL_SUFFIX = ".tmp"

#: errno -> (what happened, what to do); other errors fall back to the OS's own words.
WRITE_FIXES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free space or use --out elsewhere"),
    errno.EDQUOT: ("disk quota exceeded", "free space or use --out elsewhere"),
    errno.EROFS: ("read-only file system", "use --out on a writable disk"),
    errno.EACCES: ("permission denied", "make the directory writable or use --out elsewhere"),
    errno.EPERM: ("operation not permitted", "make the directory writable or use --out elsewhere"),
}


class DiskWriteError(SSLBenchError, OSError):
    """A file could not be written (disk full, read-only, no permission); nothing half-written is left."""


def write_error(path: Path, exc: OSError, kept: str = "") -> DiskWriteError:
    """The one-line error for a failed write of ``path``; ``kept`` says what is still intact."""
    cause, fix = WRITE_FIXES.get(exc.errno or 0, (exc.strerror or str(exc), "check the disk or use --out elsewhere"))
    tail = f" ({kept})" if kept else ""
    err = DiskWriteError(f"could not write {path}: {cause}: {fix}{tail}")
    err.errno = exc.errno
    return err


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError that says the disk (or the quota) is full."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class _WriteErrors:
    """A binary file that remembers the OSError its ``write`` raised.

    torch's zip writer calls ``write`` on the file it is given, but turns an exception from it into
    a RuntimeError of its own (``inline_container.cc ... unexpected pos``) without the errno; the
    remembered error lets :func:`_atomic_write` report the real cause (a full disk) instead."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None], kept: str = "") -> None:
    path = Path(path)
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    tracked: _WriteErrors | None = None
    try:
        with open(tmp, "wb") as f:
            tracked = _WriteErrors(f)
            write(tracked)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())  # the rename must not publish a file whose data is still in cache
        os.replace(tmp, path)
    except BaseException as exc:  # OSError, or KeyboardInterrupt from a second Ctrl-C mid-write
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if not isinstance(exc, OSError) and tracked is not None and tracked.error is not None:
            exc = tracked.error  # a writer (torch's zip writer) hid the OSError behind its own error
        if isinstance(exc, OSError) and not isinstance(exc, SSLBenchError):
            if not kept:
                with contextlib.suppress(OSError):
                    kept = f"the previous {path.name} is kept" if path.is_file() else ""
            raise write_error(path, exc, kept) from None
        raise


def atomic_write_bytes(path: Path, data: bytes, kept: str = "") -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic_write(path, lambda f: f.write(data), kept)


def atomic_write_text(path: Path, text: str, kept: str = "") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), kept)


def atomic_torch_save(path: Path, obj: Any, kept: str = "") -> None:
    """``torch.save(obj)`` to ``path`` atomically, a full disk as one :class:`DiskWriteError` line."""
    import torch  # the ground floor imports torch only when a tensor file is written

    _atomic_write(path, lambda f: torch.save(obj, f), kept)


def remove_partial_writes(directory: Path) -> list[Path]:
    """Delete the ``*.tmp`` files a killed write left in ``directory``; the paths removed."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for tmp in sorted(directory.glob(f"*{PARTIAL_SUFFIX}")):
        with contextlib.suppress(OSError):
            if tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
    return removed
