"""Column snapshots: the columns the matching passes read, per stored statement file, kept
as an Arrow IPC file beside a SQLite database.

Every run reads, for every record of its window, the ten columns of `core.engine`'s
MATCH_SCHEMA. Read back from SQLite that costs ~60 ms of CPU per column and million
records (0.75 s a side for a 1M day, most of a run's reading), for rows the ingest had
in Arrow a moment before. So the ingest also streams those columns into
`<database>-snapshots/file-<id>.arrow`, and `core.store.load_match_records` maps that file
instead of decoding the rows again.

A snapshot is derived data, never the record of truth:
- it is written only for a file whose records all went straight into `record`, in order
  (ids first_record_id.. last_record_id; nothing refused as stored already), and it is
  renamed into place only after the file's transaction has committed;
- it is used only while it names the file the database holds under that id (id, SHA-256,
  `ingested_at`, first record id in its metadata; its rows exactly the file's id range).
  Anything else (no snapshot, one left by another database at the same path, a damaged
  one) is read from SQLite as before.
Only for SQLite files: a PostgreSQL server's data is not on the machine that runs the
engine, and its readers do not pay SQLite's per-column cost in the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.arrow_text import empty_as_null  # '' is NULL, as the loader hands text over

# stored per record: MATCH_SCHEMA's columns, and what a ledger's day is selected by
SCHEMA = pa.schema([
    ("id", pa.int64()), ("ledger_id", pa.int64()), ("business_day", pa.date32()), ("kind", pa.string()),
    ("txn_id", pa.string()), ("order_id", pa.string()), ("amount", pa.int64()), ("currency", pa.string()),
    ("fee", pa.int64()), ("discount", pa.int64()), ("status", pa.string()), ("line", pa.int64()),
    ("file_id", pa.int64()),
])
_KEYS = ("file_id", "sha256", "ingested_at", "first_record_id")  # the schema metadata that names the file
# How long they are kept: `[database] snapshot_days` (core.config.SNAPSHOT_DAYS), applied
# by core.store.StatementWriter each time it stores a file.


@dataclass(frozen=True)
class StoredRange:
    """A statement file as the database holds it (statement_file's columns)."""

    file_id: int
    sha256: str
    ingested_at: str
    first_record_id: int
    last_record_id: int

    def names(self) -> dict[bytes, bytes]:
        return {k.encode(): str(getattr(self, k)).encode() for k in _KEYS}


def folder(url_database: str | None) -> Path | None:
    """Where a SQLite database file keeps its snapshots; None for an in-memory database."""
    if not url_database or url_database == ":memory:" or url_database.startswith("file:"):
        return None
    db = Path(url_database)
    return db.with_name(db.name + "-snapshots")


def path_of(where: Path, file_id: int) -> Path:
    return where / f"file-{int(file_id)}.arrow"


class SnapshotWriter:
    """Streams one statement file's pieces into a temporary snapshot while its transaction
    is open; `publish` after the commit renames it into place, `discard` removes it."""

    def __init__(self, where: Path | None, stored: StoredRange) -> None:
        """`where`: the snapshot folder (`folder`), None for no snapshot."""
        self.where, self.stored, self.rows = where, stored, 0
        self._tmp = None if where is None else where / f".file-{int(stored.file_id)}.{os.getpid()}.tmp"
        self._writer = None
        self.outdated: list[int] = []  # snapshots `publish` removes (core.store: snapshot_days)

    @property
    def usable(self) -> bool:
        return self._tmp is not None

    def add(self, stage: pa.Table) -> None:
        """The rows of a piece exactly as they went into `record` (RECORD_COLUMNS), in order."""
        if not self.usable:
            return
        try:
            ids = pa.array(np.arange(self.stored.first_record_id + self.rows,
                                     self.stored.first_record_id + self.rows + stage.num_rows, dtype=np.int64))
            day = stage["business_day"]
            columns = {
                "id": ids, "ledger_id": stage["ledger_id"],
                "business_day": day if day.type == pa.date32() else pc.cast(day, pa.date32()),
                **{name: empty_as_null(stage[name]) if name in ("txn_id", "order_id") else stage[name]
                   for name in SCHEMA.names if name not in ("id", "ledger_id", "business_day")},
            }
            table = pa.table(columns).cast(SCHEMA)
            if self._writer is None:
                self.where.mkdir(exist_ok=True)
                self._writer = pa.ipc.new_file(str(self._tmp), SCHEMA.with_metadata(self.stored.names()))
            self._writer.write_table(table)
        except (OSError, pa.ArrowException):  # a full or read-only disk, say: never the ingest's failure;
            self.discard()                    # the runs read this file from SQLite, as without snapshots
            return
        self.rows += stage.num_rows

    def publish(self, last_record_id: int) -> None:
        """After the commit: in place if the file's rows are exactly the ones streamed."""
        if not self.usable or self._writer is None:
            return
        try:
            self._writer.close()
            self._writer = None
            if last_record_id - self.stored.first_record_id + 1 != self.rows:
                raise OSError("not the rows the database holds")
            os.replace(self._tmp, path_of(self.where, self.stored.file_id))
        except (OSError, pa.ArrowException):
            self.discard()
        for file_id in self.outdated:
            _remove(path_of(self.where, file_id))

    def discard(self) -> None:
        """Nothing of this file's snapshot stays (a rolled-back file; rows refused or staged)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass
            self._writer = None
        if self._tmp is not None:
            _remove(self._tmp)
        self._tmp = None


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # gone already, or the folder is not one: nothing of ours to remove
        pass


def held(where: Path | None) -> list[int]:
    """The statement file ids that have a snapshot in `where`."""
    if where is None:
        return []
    try:
        names = os.listdir(where)
    except OSError:
        return []
    return [int(n[5:-6]) for n in names if n.startswith("file-") and n.endswith(".arrow") and n[5:-6].isdigit()]


def read(where: Path | None, stored: StoredRange) -> pa.Table | None:
    """The file's snapshot, mapped (no copy), if it names this very file and holds exactly
    its records; else None (the caller reads SQLite)."""
    if where is None:
        return None
    path = path_of(where, stored.file_id)
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            if reader.schema.metadata != stored.names() or not reader.schema.remove_metadata().equals(SCHEMA):
                return None
            table = reader.read_all()
    except (OSError, pa.ArrowException):  # none, or not a whole IPC file
        return None
    ids = table["id"]
    if table.num_rows != stored.last_record_id - stored.first_record_id + 1 or (
            table.num_rows and (ids[0].as_py() != stored.first_record_id or ids[-1].as_py() != stored.last_record_id)):
        return None
    return table


def select(table: pa.Table, ledger: int, day_from, day_to) -> pa.Table:
    """A ledger's rows of [day_from, day_to] in a snapshot."""
    day = table["business_day"]
    keep = pc.and_(pc.equal(table["ledger_id"], ledger),
                   pc.and_(pc.greater_equal(day, pa.scalar(day_from, pa.date32())),
                           pc.less_equal(day, pa.scalar(day_to, pa.date32()))))
    if pc.all(keep).as_py():  # the usual file: one ledger, the window's days
        return table
    return table.filter(keep)

