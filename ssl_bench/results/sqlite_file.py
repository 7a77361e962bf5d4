"""The results file itself: checked before SQLite touches it, created whole, opened for writing or
reading, transactions, and every SQLite failure turned into one line with the fix that matches it.

Why SQLite: several training / evaluation processes (a sweep on one machine, ``ssl-bench eval``
re-scoring an old run while a new one trains) must append to one results file without a server. WAL
journaling lets readers proceed while a writer commits, and a generous busy timeout makes concurrent
writers queue instead of failing with ``database is locked``.

Opening never guesses: a missing file is created (written to a temporary name and linked into place,
so no other process ever sees a half-initialised file); an empty file or a non-SQLite file is refused
with a one-line :class:`ResultsStoreError` instead of being silently turned into a results store. A
full disk is told apart from a damaged file: the first needs free space, the second a new file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from ..files import is_disk_full
from .records import decode_text
from .store_errors import OTHER_FILE_FIX, ResultsStoreError

BUSY_TIMEOUT_S = 60.0
SQLITE_MAGIC = b"SQLite format 3\x00"
#: Below this many free bytes next to the file, an ambiguous SQLite failure ("disk I/O error",
#: "unable to open") is read as a full disk: SQLite needs room for its journal and WAL index.
DISK_FULL_BELOW_BYTES = 1 << 20
#: Longest piece of an SQLite message quoted in ours (some quote a whole value).
MAX_QUOTED = 200
_SQLITE_FULL = getattr(sqlite3, "SQLITE_FULL", 13)

T = TypeVar("T")


def one_line(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` with its whitespace runs collapsed to one space and cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def sqlite_uri(path: Path, **params: str) -> str:
    """``file:`` URI of ``path`` with query parameters (absolute, percent-encoded)."""
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{path.resolve().as_uri()}?{query}"


class Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (incl. Ctrl-C).

    IMMEDIATE takes the write lock up front, so the busy timeout applies there rather than failing on
    a lock upgrade halfway through, and everything read inside is still true at ``COMMIT``.
    """

    def __init__(self, file: "SQLiteFile", conn: sqlite3.Connection) -> None:
        self.file, self.conn = file, conn

    def __enter__(self) -> sqlite3.Cursor:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self.file.error(exc) from exc
        return self.conn.cursor()

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.DatabaseError as err:
                self._rollback()
                raise self.file.error(err) from err
            return
        self._rollback()
        if isinstance(exc, sqlite3.DatabaseError):
            raise self.file.error(exc) from exc


class SQLiteFile:
    """One results file on disk and how to open it; knows nothing of the tables inside.

    ``access_mode`` says how it was opened: "rw", "ro" (SQLite ``mode=ro``) or "immutable" (the
    read-only-medium fallback).
    """

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = BUSY_TIMEOUT_S, readonly: bool = False) -> None:
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        self.readonly = bool(readonly)
        self.access_mode = "rw"

    # -- before SQLite touches the file --------------------------------------------------

    def check_path(self) -> bool:
        """Refuse paths that are not (and cannot become) a results file; True if it exists.

        The checks run before SQLite touches the file because ``sqlite3.connect`` happily turns an
        empty file, or any SQLite database, into whatever we write.
        """
        if self.path.is_dir():
            raise ResultsStoreError(
                f"results store path {self.path} is a directory; pass a file path such as "
                f"{self.path / 'results.db'}"
            )
        if not self.path.exists():
            if self.readonly:
                raise ResultsStoreError(
                    f"no results store at {self.path}; run `ssl-bench run METHOD` first, or pass --results FILE"
                )
            return False
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise ResultsStoreError(
                f"cannot read results store {self.path} ({exc.strerror or exc}); "
                f"fix its permissions or pass another --results file"
            ) from None
        if not head:
            raise ResultsStoreError(
                f"{self.path} is empty: not an ssl-bench results database; delete it or pass another --results file"
            )
        if head != SQLITE_MAGIC:
            raise ResultsStoreError(
                f"{self.path} is not a usable ssl-bench results database (not an SQLite file). {OTHER_FILE_FIX}"
            )
        return True

    # -- connecting ----------------------------------------------------------------------

    def configure(self, conn: sqlite3.Connection) -> None:
        """Rows by name, our busy timeout, and damaged UTF-8 read as a value (not a failed query)."""
        conn.row_factory = sqlite3.Row
        conn.text_factory = decode_text
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a write holds the lock only for
        # the duration of one logical operation.
        return sqlite3.connect(target, uri=uri, timeout=self.timeout_s, isolation_level=None)

    def create(self, init: Callable[[sqlite3.Cursor], None]) -> None:
        """Create the file at ``self.path``; ``init(cursor)`` fills a blank file inside one transaction.

        The file is built under a temporary name next to the target and hard-linked into place, so
        another process starting at the same moment sees either no file or a complete one, never the
        zero-byte file that ``sqlite3.connect`` leaves before the first write (which opening would
        rightly refuse). If the filesystem has no hard links we fall back to creating it in place
        (``init`` must then leave a file another process already filled alone).
        """
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.init")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._init_file(str(tmp), init)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first: we open theirs
            except OSError as exc:  # no hard links here (some network/FAT filesystems)
                if is_disk_full(exc):
                    raise
                if not self.path.exists():
                    self._init_file(str(self.path), init)
        except sqlite3.DatabaseError as exc:
            raise self.error(exc) from exc
        except PermissionError as exc:
            raise self.readonly_location_error(exc.strerror or exc) from None
        except OSError as exc:  # a full disk, or a parent path component is a file
            if is_disk_full(exc):
                raise self.disk_full_error(exc.strerror or str(exc)) from None
            raise ResultsStoreError(
                f"cannot create results store {self.path} ({exc.strerror or exc}: "
                f"{exc.filename or self.path}); pass another --results file"
            ) from None
        finally:
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(OSError):  # absent, or its folder never existed
                    os.unlink(f"{tmp}{suffix}")

    def _init_file(self, target: str, init: Callable[[sqlite3.Cursor], None]) -> None:
        conn = self._connect(target)
        try:
            with self.transaction(conn) as cur:
                init(cur)
        finally:
            conn.close()

    def connect_for_writing(self, prepare: Callable[[sqlite3.Cursor], T]) -> tuple[sqlite3.Connection, T]:
        """A read-write connection; ``prepare(cursor)`` (check the tables, migrate) runs in one
        transaction first, with foreign keys off so a table rebuild cannot cascade-delete rows."""
        if not os.access(self.path, os.W_OK):
            raise self.readonly_location_error("file is not writable")
        conn = self._connect(str(self.path))
        try:
            self.configure(conn)
            # PRAGMA foreign_keys is a no-op inside a transaction, hence here.
            conn.execute("PRAGMA foreign_keys = OFF")
            with self.transaction(conn) as cur:
                prepared = prepare(cur)
            # Only once we know the file is ours: WAL is a persistent file setting.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self.error(exc) from exc
        except BaseException:
            conn.close()
            raise
        self.access_mode = "rw"
        return conn, prepared

    def connect_readonly(self, check: Callable[[sqlite3.Cursor], T]) -> tuple[sqlite3.Connection, T]:
        """Connect with ``mode=ro``; on a read-only directory or medium fall back to ``immutable=1``.

        ``mode=ro`` still needs the WAL index (``-shm``) next to the file, which cannot be created
        where the directory is read-only. ``immutable=1`` tells SQLite the file cannot change, so it
        takes no locks and ignores the WAL. That is safe for a reader here because no writer can
        commit to a file in a directory it cannot create its journal in; the one thing it would miss
        is a left-over, non-empty ``-wal`` file (commits not yet copied into the database), so that
        case is refused instead. ``check(cursor)`` verifies the tables; its result is returned.
        """
        try:
            conn = self.connect_mode_ro()
            self.access_mode = "ro"
        except sqlite3.DatabaseError as first:
            if any(w in str(first).lower() for w in ("locked", "busy")):
                raise self.error(first) from first  # a writer holds it: wait, never bypass
            wal = Path(f"{self.path}-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise ResultsStoreError(
                    f"{self.path} cannot be opened read-only ({one_line(str(first))}) and {wal.name} holds "
                    f"changes SQLite cannot read without writing next to it; copy {self.path.name} with its "
                    f"-wal file to a writable directory, or open it once for writing"
                ) from None
            try:
                conn = self._connect(sqlite_uri(self.path, immutable="1"), uri=True)
                self.configure(conn)
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except sqlite3.DatabaseError as exc:
                raise self.error(exc) from exc
            self.access_mode = "immutable"
        try:
            checked = check(conn.cursor())
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self.error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn, checked

    def connect_mode_ro(self) -> sqlite3.Connection:
        """A ``mode=ro`` connection that has proven it can read (errors surface on first read)."""
        conn = self._connect(sqlite_uri(self.path, mode="ro"), uri=True)
        try:
            self.configure(conn)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    # -- using a connection ------------------------------------------------------------

    def transaction(self, conn: sqlite3.Connection) -> Transaction:
        return Transaction(self, conn)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Map SQLite failures mid-read ("database disk image is malformed") to one line."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise self.error(exc) from exc

    # -- errors ------------------------------------------------------------------------

    def disk_is_full(self) -> bool:
        """Whether the disk holding the file (or its nearest existing folder) is practically full."""
        folder = self.path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            return shutil.disk_usage(folder).free < DISK_FULL_BELOW_BYTES
        except OSError:
            return False

    def disk_full_error(self, detail: object) -> ResultsStoreError:
        return ResultsStoreError(
            f"cannot write results store {self.path}: the disk is full ({one_line(str(detail))}); the file "
            f"itself is not damaged. Fix: free space on that disk, or pass another --results file"
        )

    def readonly_location_error(self, detail: object) -> ResultsStoreError:
        still = (f" (reading it, e.g. `ssl-bench leaderboard --results {self.path}`, still works)"
                 if self.path.is_file() else "")
        return ResultsStoreError(
            f"{self.path} is on a read-only file or directory ({one_line(str(detail))}); ssl-bench cannot "
            f"record runs there. Fix: pass a writable --results file{still}"
        )

    def error(self, exc: sqlite3.DatabaseError) -> ResultsStoreError:
        """One line for an SQLite failure, with the fix that matches its cause."""
        text = one_line(str(exc))
        low = text.lower()
        code = getattr(exc, "sqlite_errorcode", None)
        if (isinstance(code, int) and code & 0xFF == _SQLITE_FULL) or "database or disk is full" in low:
            return self.disk_full_error(text)
        if "locked" in low or "busy" in low:
            return ResultsStoreError(
                f"{self.path} is locked: another process held it for over {self.timeout_s:g} s "
                f"({text}). Fix: wait for that process to finish, or pass another --results file"
            )
        if ("disk i/o error" in low or "unable to open" in low) and self.disk_is_full():
            return self.disk_full_error(text)
        if "readonly" in low or "read-only" in low or "unable to open" in low:
            return self.readonly_location_error(text)
        return ResultsStoreError(
            f"{self.path} is not a usable ssl-bench results database ({text}). Fix: restore it "
            f"from a backup, or move or delete that file (a new store is created on the next "
            f"run; `sqlite3 {self.path.name} .recover` can salvage rows), or point the results "
            f"path at a different file."
        )
