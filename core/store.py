"""Bulk record I/O: Arrow tables in and out of the record store, one transaction per file.

The ORM (SQLModel) handles the few rows of merchants, runs and breaks. Records come in
millions, so they go through ADBC: Arrow columns are bound straight into SQLite, or
COPYed into PostgreSQL, via a temporary staging table, then
`INSERT ... ON CONFLICT DO NOTHING` folds them into `record` so a transaction already
stored from an overlapping file is kept once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import insert as sa_insert, update as sa_update
from sqlalchemy.exc import IntegrityError

from core import snapshots
from core.arrow_text import empty_as_null
from core.config import SNAPSHOT_DAYS
from models.db import adbc_connect, get_engine, is_sqlite, sqlite_path

# The ORM's classes (sqlmodel, models.tables) are imported in the few functions that use
# them: `recon ingest` writes through ADBC alone and saves their 0.2 s of start-up.

RECORD_COLUMNS = [
    "ledger_id", "file_id", "line", "kind", "ref", "txn_id", "order_id", "amount", "currency",
    "fee", "discount", "status", "occurred_at", "business_day", "payer", "memo",
]


@dataclass(frozen=True)
class StoredFile:
    file_id: int
    new_rows: int
    already_ingested: bool


def ensure_merchant(url: str, merchant) -> None:
    from sqlmodel import Session

    from models.tables import Merchant

    with Session(get_engine(url)) as s:
        row = s.get(Merchant, merchant.id)
        if row is None:
            s.add(Merchant(id=merchant.id, name=merchant.name, timezone=merchant.timezone, currency=merchant.currency))
        else:
            row.name, row.timezone, row.currency = merchant.name, merchant.timezone, merchant.currency
        try:
            s.commit()
        except IntegrityError:  # another process created it first
            s.rollback()


def ledger_ids(url: str, merchant_id: str, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(source, side) -> ledger id, creating ledgers on first use."""
    from sqlmodel import Session, select

    from models.tables import Ledger

    engine = get_engine(url)
    out: dict[tuple[str, str], int] = {}
    for source, side in sorted(keys):
        for _attempt in range(2):
            with Session(engine) as s:
                q = select(Ledger).where(Ledger.merchant_id == merchant_id, Ledger.source == source, Ledger.side == side)
                row = s.exec(q).first()
                if row is None:
                    row = Ledger(merchant_id=merchant_id, source=source, side=side)
                    s.add(row)
                    try:
                        s.commit()
                    except IntegrityError:
                        s.rollback()
                        continue
                out[(source, side)] = row.id
                break
    return out


def find_ledgers(url: str, merchant_id: str) -> dict[tuple[str, str], int]:
    """(source, side) -> ledger id, read-only."""
    from sqlmodel import Session, select

    from models.tables import Ledger

    with Session(get_engine(url)) as s:
        rows = s.exec(select(Ledger).where(Ledger.merchant_id == merchant_id)).all()
        return {(r.source, r.side): r.id for r in rows}


def find_file(url: str, merchant_id: str, sha256: str) -> int | None:
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT id FROM statement_file WHERE merchant_id = {_lit(merchant_id)} AND sha256 = {_lit(sha256)}")
        row = cur.fetchone()
    return row[0] if row else None


def prepare(url: str, records: pa.Table) -> pa.Table:
    """Records in the order and the types the record table takes them in.

    Pure Arrow work, no database: ingest runs it in the parse worker, beside the previous
    file's write. In key order (ledger, or the source it stands for; kind; ref) the unique
    index is appended to instead of written all over: 8.0 s -> 1.4 s for a million rows
    into SQLite.
    """
    first = "ledger_id" if "ledger_id" in records.column_names else "source"
    keys = [("kind", "ascending"), ("ref", "ascending")]
    if pc.count_distinct(records[first]).as_py() > 1:  # one ledger (the usual file): a key less, 3x faster
        keys.insert(0, (first, "ascending"))
    if not _in_order(records, [k for k, _ in keys]):  # an export in id order (the usual) is kept as it is
        records = records.take(pc.sort_indices(records, sort_keys=keys))
    if first == "source":  # the writer then maps a few names to ledger ids, not a million strings
        source = records["source"].combine_chunks().dictionary_encode()
        records = records.set_column(records.schema.get_field_index("source"), "source", source)
    at, day = records.schema.get_field_index("occurred_at"), records.schema.get_field_index("business_day")
    if is_sqlite(url):  # SQLAlchemy reads SQLite dates and times back from this text form
        records = records.set_column(at, "occurred_at", pc.cast(records["occurred_at"], pa.string()))
        return records.set_column(day, "business_day", pc.cast(records["business_day"], pa.string()))
    return records.set_column(at, "occurred_at", records["occurred_at"].cast(pa.timestamp("us", tz="UTC")))


def _in_order(records: pa.Table, keys: list[str]) -> bool:
    """Whether the rows are already in ascending order of `keys` (each row against the next)."""
    if records.num_rows < 2:
        return True
    before, after = records.slice(0, records.num_rows - 1), records.slice(1)
    ok = None  # rows in order on the keys so far, given that the earlier keys are equal
    for key in reversed(keys):
        a, b = before[key], after[key]
        if pc.any(pc.is_null(a)).as_py() or pc.any(pc.is_null(b)).as_py():
            return False
        ok = pc.less_equal(a, b) if ok is None else pc.or_(pc.less(a, b), pc.and_(pc.equal(a, b), ok))
    return pc.all(ok).as_py()


def write_statement(url: str, *, records: pa.Table, prepared: bool = False, merchant_id: str, source: str,
                    side: str, fmt: str, path: str, sha256: str, business_day: date | None,
                    control_totals: dict) -> StoredFile:
    """Store one statement file and its records (which carry `ledger_id`) atomically; a
    known file is a no-op. `prepared=True` says `prepare` has already been applied."""
    with StatementWriter(url, merchant_id=merchant_id, source=source, side=side, fmt=fmt, path=path,
                         sha256=sha256) as writer:
        if writer.known is None:
            writer.add(records if prepared else prepare(url, records))
        return writer.finish(business_day=business_day, control_totals=control_totals, row_count=records.num_rows)


class StatementWriter:
    """One statement file written in pieces, all in one transaction (a context manager).

        with StatementWriter(url, merchant_id=..., source=..., side=..., fmt=..., path=..., sha256=...) as w:
            if w.known is None:           # else the file is stored already: a no-op
                for piece in pieces: w.add(piece)     # `prepare`d records, with `source` or `ledger_id`
            stored = w.finish(business_day=..., control_totals=..., row_count=...)

    Leaving the block without `finish` (an error in a later piece, a control total that
    does not add up) rolls every piece back: a bad file leaves nothing behind, the merchant
    and ledger rows it would have created included (they are written here, in the same
    transaction, so that nothing but ADBC touches the database while it is open).

    A piece goes straight into `record` while nothing stored can collide with it (the
    common case: a new day); otherwise, and from the first piece that does collide,
    through a staging table with ON CONFLICT DO NOTHING, which keeps a transaction stored
    from an overlapping file once and notes the repeat (`duplicates`).
    """

    def __init__(self, url: str, *, merchant_id: str, source: str, side: str, fmt: str, path: str, sha256: str,
                 merchant=None, snapshot_days: int = SNAPSHOT_DAYS) -> None:
        self.url, self.merchant_id, self.source, self.side = url, merchant_id, source, side
        self.fmt, self.path, self.sha256, self.merchant = fmt, path, sha256, merchant
        self.snapshot_days = snapshot_days  # [database] snapshot_days: core.snapshots
        self.sqlite = is_sqlite(url)
        self.known: int | None = None
        self.file_id: int | None = None
        self.new_rows = 0
        self.duplicates: list[dict] = []
        self._ledgers: dict[str, int] = {}
        self._straight = True  # no collision seen yet: pieces may go straight into `record`
        self._pieces = 0
        self._done = False
        self._first_id = 0  # this file's records get ids from here on (see StatementFile)
        self._days: tuple | None = None  # (first, last) business day of the rows added
        self._snapshot: snapshots.SnapshotWriter | None = None  # the match columns beside SQLite
        self._last_id = 0

    def __enter__(self) -> "StatementWriter":
        self.conn = adbc_connect(self.url)
        self.cur = self.conn.cursor()
        try:
            self._begin()
        except BaseException:
            self._close(commit=False)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._close(commit=self._done and exc_type is None)

    def _close(self, commit: bool) -> None:
        committed = False
        try:
            if commit:
                self.conn.commit()
                committed = True
            else:
                self.conn.rollback()
        finally:
            self.cur.close()
            self.conn.close()
            if self._snapshot is not None and committed:  # in place only once its rows are committed
                self._snapshot.publish(self._last_id)
            elif self._snapshot is not None:
                self._snapshot.discard()

    def _begin(self) -> None:
        cur = self.cur
        if self.sqlite:
            _take_write_lock(cur)
        cur.execute(f"SELECT id FROM statement_file WHERE merchant_id = {_lit(self.merchant_id)} "
                    f"AND sha256 = {_lit(self.sha256)}")
        found = cur.fetchone()
        if found:
            self.known = found[0]
            return
        if self.merchant is not None:
            m = self.merchant
            cur.execute("INSERT INTO merchant (id, name, timezone, currency) VALUES "
                        f"({_lit(m.id)}, {_lit(m.name)}, {_lit(m.timezone)}, {_lit(m.currency)}) ON CONFLICT (id) DO "
                        "UPDATE SET name = excluded.name, timezone = excluded.timezone, currency = excluded.currency")
        now = datetime.now(timezone.utc)
        ingested_at = _ts_text(now) if self.sqlite else now.isoformat()
        cur.execute(
            "INSERT INTO statement_file (merchant_id, source, side, format, path, sha256, business_day, "
            "row_count, new_rows, control_totals, duplicates, ingested_at) VALUES ("
            f"{_lit(self.merchant_id)}, {_lit(self.source)}, {_lit(self.side)}, {_lit(self.fmt)}, {_lit(self.path)}, "
            f"{_lit(self.sha256)}, NULL, 0, 0, '{{}}', '[]', {_lit(ingested_at)}) RETURNING id"
        )
        self.file_id = cur.fetchone()[0]
        self._first_id = self._last_record_id() + 1
        if self.sqlite:
            where = snapshots.folder(sqlite_path(self.url)) if self.snapshot_days > 0 else None
            self._snapshot = snapshots.SnapshotWriter(where, snapshots.StoredRange(
                self.file_id, self.sha256, ingested_at, self._first_id, 0))

    def ledger(self, source: str) -> int:
        """The ledger id of (this merchant, source, this side), created in this transaction if new."""
        if source not in self._ledgers:
            where = f"merchant_id = {_lit(self.merchant_id)} AND source = {_lit(source)} AND side = {_lit(self.side)}"
            self.cur.execute(f"SELECT id FROM ledger WHERE {where}")
            row = self.cur.fetchone()
            if row is None:
                self.cur.execute(f"INSERT INTO ledger (merchant_id, source, side) VALUES ({_lit(self.merchant_id)}, "
                                 f"{_lit(source)}, {_lit(self.side)}) RETURNING id")
                row = self.cur.fetchone()
            self._ledgers[source] = row[0]
        return self._ledgers[source]

    def add(self, records: pa.Table) -> None:
        """Write one piece: `prepare`d records with a `ledger_id` column, or a `source` one."""
        assert self.known is None and self.file_id is not None, "add() on a file stored already"
        first = self._pieces == 0
        self._pieces += 1
        stage = self._stage(records)
        if not stage.num_rows:
            return
        days = pc.min_max(stage["business_day"]).as_py()
        if self._straight and (not first or self._nothing_stored_near(days["min"], days["max"])):
            if self._straight_in(stage, first):
                if self._snapshot is not None:
                    self._snapshot.add(stage)
                self.new_rows += stage.num_rows
                self._note_days(days["min"], days["max"])
                return
            if not self.sqlite:  # the failed COPY aborted PostgreSQL's transaction: start it over
                self.conn.rollback()
                self._ledgers.clear()
                self._begin()
                stage = self._stage(records)
        self._straight = False
        if self._snapshot is not None:  # ids no longer follow the pieces: this file reads from SQLite
            self._snapshot.discard()
        self._staged_in(stage)

    def _last_record_id(self) -> int:
        """The largest record id this transaction sees (0 for none): this file's rows get
        ids above the value read before they are written (StatementFile's id range)."""
        self.cur.execute("SELECT coalesce(max(id), 0) FROM record")
        return int(self.cur.fetchone()[0])

    def _outdated_snapshots(self, first_day: date) -> list[int]:
        """Snapshots beside the database whose file ended more than `snapshot_days` before
        `first_day`, or that name no file of this database."""
        held = [i for i in snapshots.held(self._snapshot.where) if i != self.file_id]
        if not held:
            return []
        cutoff = _day_lit(self.sqlite, _as_date(first_day) - timedelta(days=self.snapshot_days))
        self.cur.execute(f"SELECT id FROM statement_file WHERE id IN ({', '.join(map(str, held))}) "
                         f"AND last_day >= {cutoff}")
        kept = {int(row[0]) for row in self.cur.fetchall()}
        return [i for i in held if i not in kept]

    def _note_days(self, first, last) -> None:
        """Widen the business days of the rows this file stored (StatementFile.first_day/last_day)."""
        if first is None:
            return
        self._days = (first, last) if self._days is None else (min(self._days[0], first), max(self._days[1], last))

    def _nothing_stored_near(self, first_day, last_day) -> bool:
        """True when no stored file that could share a ledger with this one (of this side;
        on the channel side, of this source) has records within [first_day, last_day].

        An identity stored on another day (a row delivered again later) is still possible:
        the unique index refuses it, and the caller starts over on the staged path."""
        first, last = _day_lit(self.sqlite, first_day), _day_lit(self.sqlite, last_day)
        same_source = f"AND source = {_lit(self.source)} " if self.side == "channel" else ""
        self.cur.execute(f"SELECT count(*) FROM statement_file WHERE merchant_id = {_lit(self.merchant_id)} "
                         f"AND side = {_lit(self.side)} {same_source}AND first_record_id IS NOT NULL "
                         f"AND first_day <= {last} AND last_day >= {first}")
        return self.cur.fetchone()[0] == 0

    def _stage(self, records: pa.Table) -> pa.Table:
        """The piece as `record` rows: ledger ids, this file's id, the table's column order."""
        if "ledger_id" not in records.column_names:
            source = records["source"]
            if not pa.types.is_dictionary(source.type):
                source = source.combine_chunks().dictionary_encode()
            else:
                source = source.unify_dictionaries().combine_chunks()
            ids = pa.array([self.ledger(n) for n in source.dictionary.to_pylist()], pa.int64())
            records = records.append_column("ledger_id", pc.take(ids, source.indices))
        stage = records.append_column("file_id", pa.array(np.full(records.num_rows, self.file_id, np.int64)))
        return stage.select(RECORD_COLUMNS)

    def _straight_in(self, stage: pa.Table, first: bool) -> bool:
        """Append the piece to `record`; False (and nothing of it written) if a row collides
        with an identity stored from another file or piece.

        SQLite rolls a failed piece back to a savepoint. PostgreSQL's driver cannot (after a
        failed COPY it refuses every statement but a full rollback), so there only a file's
        first piece goes straight, and the caller starts the transaction over if it fails."""
        if not self.sqlite:
            if not first:
                return False
            try:
                self.cur.adbc_ingest("record", stage, mode="append")
            except Exception:
                return False
            return True
        self.cur.execute("SAVEPOINT recon_piece")
        try:
            self.cur.adbc_ingest("record", stage, mode="append")
        except Exception:
            self.cur.execute("ROLLBACK TO SAVEPOINT recon_piece")
            self.cur.execute("RELEASE SAVEPOINT recon_piece")
            return False
        self.cur.execute("RELEASE SAVEPOINT recon_piece")
        return True

    def _staged_in(self, stage: pa.Table) -> None:
        cur = self.cur
        cur.execute("DROP TABLE IF EXISTS recon_stage")
        cur.adbc_ingest("recon_stage", stage, mode="create", temporary=True)
        before = self._last_record_id()
        cols = ", ".join(RECORD_COLUMNS)
        insert = f"INSERT INTO record ({cols}) SELECT {cols} FROM recon_stage WHERE true ON CONFLICT DO NOTHING"
        if self.sqlite:
            cur.execute(insert)
            cur.execute("SELECT changes()")
        else:
            cur.execute(f"WITH inserted AS ({insert} RETURNING 1) SELECT count(*) FROM inserted")
        inserted = cur.fetchone()[0]
        self.new_rows += inserted
        if inserted:  # the days of the rows stored, not of those another file holds already
            cur.execute(f"SELECT min(business_day), max(business_day) FROM record WHERE id > {int(before)} "
                        f"AND file_id = {self.file_id}")
            self._note_days(*cur.fetchone())
        if inserted < stage.num_rows and len(self.duplicates) < MAX_DUPLICATES_KEPT:
            self.duplicates += _duplicates(cur, self.file_id, self.side, MAX_DUPLICATES_KEPT - len(self.duplicates))
        cur.execute("DROP TABLE recon_stage")

    def finish(self, *, business_day: date | None, control_totals: dict, row_count: int,
               path: str | None = None) -> StoredFile:
        """Complete the statement's row and commit (on leaving the block); a known file: its id."""
        self._done = True
        if self.known is not None:
            return StoredFile(self.known, 0, True)
        ranges = "first_record_id = NULL, last_record_id = NULL, first_day = NULL, last_day = NULL"
        if self.new_rows:  # this file's rows: ids from _first_id to the largest now stored
            first_day, last_day = (_day_lit(self.sqlite, d) for d in self._days)
            self._last_id = self._last_record_id()
            ranges = (f"first_record_id = {int(self._first_id)}, last_record_id = {self._last_id}, "
                      f"first_day = {first_day}, last_day = {last_day}")
            if self._snapshot is not None and self._snapshot.usable:
                self._snapshot.outdated = self._outdated_snapshots(self._days[0])
        self.cur.execute(
            f"UPDATE statement_file SET {ranges}, "
            f"row_count = {int(row_count)}, new_rows = {self.new_rows}, "
            f"business_day = {_lit(business_day.isoformat()) if business_day else 'NULL'}, "
            f"path = {_lit(path or self.path)}, "
            f"control_totals = {_lit(json.dumps(control_totals, ensure_ascii=False, sort_keys=True))}, "
            f"duplicates = {_lit(json.dumps(self.duplicates, ensure_ascii=False))} WHERE id = {self.file_id}")
        return StoredFile(self.file_id, self.new_rows, False)


def _take_write_lock(cur) -> None:
    """SQLite: make the transaction a writer before it reads anything.

    Several processes write one SQLite file (the pulls due at the same minute each ingest in
    a `recon jobs run` process). A transaction that reads first and writes later cannot wait
    for the write lock: once another connection has written, its snapshot is stale and SQLite
    answers "database is locked" at once, whatever busy_timeout says. A write as the first
    statement takes the lock up front and waits for it like any writer. (`BEGIN IMMEDIATE`
    says the same, but ADBC's driver always has a deferred transaction open already.)
    """
    cur.execute("UPDATE statement_file SET id = id WHERE 0")


MAX_DUPLICATES_KEPT = 10_000  # a whole file delivered twice under another name: keep a sample


def _duplicates(cur, file_id: int, side: str, limit: int) -> list[dict]:
    """Staged rows of this file that were not stored, each with the row that was kept."""
    if side != "channel":  # overlapping order exports are normal, not a data-quality issue
        return []
    cur.execute(
        "SELECT s.line, s.kind, s.ref, s.order_id, s.txn_id, s.amount, s.currency, s.business_day, "
        "f.path, k.line FROM recon_stage s "
        "JOIN record k ON k.ledger_id = s.ledger_id AND k.kind = s.kind AND k.ref = s.ref "
        "JOIN statement_file f ON f.id = k.file_id "
        f"WHERE NOT (k.file_id = {file_id} AND k.line = s.line) ORDER BY s.line LIMIT {int(limit)}"
    )
    names = ["line", "kind", "ref", "order_id", "txn_id", "amount", "currency", "business_day", "kept_file", "kept_line"]
    return [{k: (str(v) if k == "business_day" else v) for k, v in zip(names, row)} for row in cur.fetchall()]


def load_duplicates(url: str, merchant_id: str, source: str, day_from: date, day_to: date) -> pa.Table:
    """The duplicate rows recorded at ingest for one source, with their file."""
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT path, duplicates FROM statement_file WHERE merchant_id = {_lit(merchant_id)} "
                    f"AND source = {_lit(source)} AND duplicates <> '[]'")
        rows = cur.fetchall()
    out = []
    for path, dups in rows:
        for d in json.loads(dups):
            if day_from.isoformat() <= d["business_day"][:10] <= day_to.isoformat():
                out.append({**d, "business_day": d["business_day"][:10], "file": path})
    schema = pa.schema([("line", pa.int64()), ("kind", pa.string()), ("ref", pa.string()), ("order_id", pa.string()),
                        ("txn_id", pa.string()), ("amount", pa.int64()), ("currency", pa.string()),
                        ("business_day", pa.string()), ("kept_file", pa.string()), ("kept_line", pa.int64()),
                        ("file", pa.string())])
    return pa.Table.from_pylist(out, schema=schema)


def load_records(url: str, ledger: int | None, day_from: date, day_to: date) -> pa.Table:
    """A ledger's records in [day_from, day_to], with their file path, as an Arrow table."""
    from core.engine import INPUT_SCHEMA

    if ledger is None:
        return INPUT_SCHEMA.empty_table()
    # ADBC's SQLite driver infers a column's type from the first rows: a text column that
    # starts with NULLs would be read as integers, so NULL text travels as '' (see nullif below).
    sql = (
        "SELECT r.id, r.kind, r.ref, coalesce(r.txn_id, '') AS txn_id, coalesce(r.order_id, '') AS order_id, "
        "r.amount, r.currency, r.fee, r.discount, r.status, r.occurred_at, r.business_day, "
        "coalesce(r.payer, '') AS payer, coalesce(r.memo, '') AS memo, r.line, r.file_id "
        + records_of_days(ledger, day_from, day_to, is_sqlite(url))
    )
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        table = cur.fetch_arrow_table()
        cur.execute("SELECT id, path FROM statement_file")
        paths = dict(cur.fetchall())
    if table.num_rows == 0:  # no rows, no type inference: hand back the typed empty table
        return INPUT_SCHEMA.empty_table()
    # the file path as a dictionary column: a million rows share a handful of paths, so
    # they are not sent through the database a million times
    ids = sorted(paths)
    positions = pc.index_in(table["file_id"], value_set=pa.array(ids, table["file_id"].type))
    if isinstance(positions, pa.ChunkedArray):
        positions = positions.combine_chunks()
    files = pa.DictionaryArray.from_arrays(positions, pa.array([paths[i] for i in ids], pa.string()))
    table = table.drop_columns(["file_id"]).append_column("file", files)
    if pa.types.is_string(table.schema.field("business_day").type):  # SQLite hands dates back as text
        table = table.set_column(table.schema.get_field_index("business_day"), "business_day",
                                 pc.cast(table["business_day"], pa.date32()))
        table = table.set_column(table.schema.get_field_index("occurred_at"), "occurred_at",
                                 pc.cast(table["occurred_at"], pa.timestamp("us")))
    return _nulls_for_empty(table, ("txn_id", "order_id", "payer", "memo"))


# The engine's two reads (core.engine.MATCH_SCHEMA / DETAIL_SCHEMA): the columns every
# pass reads, for every record of the window; the wide text, for the few records the exact
# passes leave. Each column costs the SQLite driver about 0.06 s a million rows, so the
# narrow read of a million-row side takes ~0.8 s of CPU instead of ~1.3 s.
# NULL text travels as '' (ADBC's SQLite driver infers types from the first rows; see load_records).
_MATCH_SQL = ("r.id, r.kind, coalesce(r.txn_id, '') AS txn_id, coalesce(r.order_id, '') AS order_id, r.amount, "
              "r.currency, {fees}r.status, r.line, r.file_id")
_DETAIL_SQL = "r.id, r.ref, coalesce(r.payer, '') AS payer, coalesce(r.memo, '') AS memo, r.occurred_at"
_BATCH_ROWS = 65536  # SQLite driver's batches (default 1024): fewer, larger chunks scan faster in DuckDB
_IDS_PER_QUERY = 10_000


def load_match_records(url: str, ledger: int | None, day_from: date, day_to: date, fees: bool = True) -> pa.Table:
    """A ledger's records in [day_from, day_to], the columns the matching passes read
    (core.engine.MATCH_SCHEMA: no wide text, files by id; `fees=False`: no fee and discount,
    which only the channel's side has), in no set order (the engine orders what it ranks).

    A file with a column snapshot (core.snapshots) is read from it; the others from SQLite,
    one query per business day, so the day comes from the query instead of a million stored
    dates."""
    from core.engine import MATCH_SCHEMA

    schema = pa.schema([f for f in MATCH_SCHEMA if fees or f.name not in ("fee", "discount")])
    if ledger is None:
        return schema.empty_table()
    sqlite = is_sqlite(url)
    parts = []
    with adbc_connect(url) as conn, conn.cursor() as cur:
        unsnapped = None  # SQLite reads every file of the window
        if sqlite:
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(_BATCH_ROWS)})
            where, unsnapped = snapshots.folder(sqlite_path(url)), []
            for stored in _files_of_days(cur, ledger, day_from, day_to):
                snapshot = snapshots.read(where, stored)
                if snapshot is None:
                    unsnapped.append(stored.file_id)
                else:
                    parts.append(snapshots.select(snapshot, ledger, day_from, day_to))
        if unsnapped is None or unsnapped:
            only = f" AND f.id IN ({', '.join(map(str, unsnapped))})" if unsnapped else ""
            for n in range((day_to - day_from).days + 1):
                day = day_from + timedelta(days=n)
                cur.execute(f"SELECT {_MATCH_SQL.format(fees='r.fee, r.discount, ' if fees else '')} "
                            + records_of_days(ledger, day, day, sqlite) + only)
                table = cur.fetch_arrow_table()
                if table.num_rows:  # no rows, no type inference
                    table = table.append_column("business_day", pa.repeat(pa.scalar(day, pa.date32()),
                                                                          table.num_rows))
                    parts.append(_nulls_for_empty(table, ("txn_id", "order_id")))
    parts = [t for t in parts if t.num_rows]
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([t.select(schema.names).cast(schema) for t in parts])


def _files_of_days(cur, ledger: int, day_from: date, day_to: date) -> list[snapshots.StoredRange]:
    """The statement files that hold records of a ledger's [day_from, day_to] (SQLite; the
    files `records_of_days` reads)."""
    cur.execute("SELECT f.id, f.sha256, f.ingested_at, f.first_record_id, f.last_record_id FROM statement_file f "
                f"WHERE {_files_of_days_sql(ledger, _day_lit(True, day_from), _day_lit(True, day_to))} "
                "AND f.first_record_id IS NOT NULL ORDER BY f.id")
    return [snapshots.StoredRange(int(i), sha, str(at), int(first), int(last))
            for i, sha, at, first, last in cur.fetchall()]


def load_record_details(url: str, ids: pa.Array, ledger: int | None = None, day_from: date | None = None,
                        day_to: date | None = None, rows: int = 0) -> pa.Table:
    """ref, payer, memo and occurred_at of the given records (core.engine.DETAIL_SCHEMA).

    By id, a few thousand at a time (~2 us a record). When they are more than two thirds of
    the `rows` their ledger holds in [day_from, day_to] (a source matched by order id or by
    the fuzzy pass alone), reading the whole range and keeping those costs less (measured:
    1M of 1M ids 1.8 s by id, 1.1 s by range; 300k of 1M 0.5 s by id, 1.1 s by range)."""
    from core.engine import DETAIL_SCHEMA

    sqlite = is_sqlite(url)
    ids = pc.unique(ids.cast(pa.int64()))
    scan = ledger is not None and len(ids) * 3 > rows * 2 > 0
    queries = ([records_of_days(ledger, day_from + timedelta(n), day_from + timedelta(n), sqlite)
                for n in range((day_to - day_from).days + 1)] if scan else
               [f"FROM record r WHERE r.id IN ({', '.join(str(i) for i in ids[n:n + _IDS_PER_QUERY].to_pylist())})"
                for n in range(0, len(ids), _IDS_PER_QUERY)])
    parts = []
    with adbc_connect(url) as conn, conn.cursor() as cur:
        if sqlite:
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(_BATCH_ROWS)})
        for rows_from in queries:
            cur.execute(f"SELECT {_DETAIL_SQL} {rows_from}")
            table = cur.fetch_arrow_table()
            if table.num_rows:
                parts.append(table.filter(pc.is_in(table["id"].cast(pa.int64()), value_set=ids)) if scan else table)
    if not parts:
        return DETAIL_SCHEMA.empty_table()
    table = pa.concat_tables([t.cast(pa.schema([t.schema.field(f.name).with_type(f.type) if f.name != "occurred_at"
                                                else t.schema.field(f.name) for f in DETAIL_SCHEMA]))
                              for t in parts])
    if pa.types.is_string(table.schema.field("occurred_at").type):  # SQLite hands times back as text
        table = table.set_column(table.schema.get_field_index("occurred_at"), "occurred_at",
                                 pc.cast(table["occurred_at"], pa.timestamp("us")))
    return _nulls_for_empty(table, ("payer", "memo"))


def _day_lit(sqlite: bool, day: date | str) -> str:
    text = day.isoformat() if isinstance(day, date) else str(day)[:10]
    return _lit(text) if sqlite else f"DATE {_lit(text)}"


def records_of_days(ledger: int, day_from: date, day_to: date, sqlite: bool) -> str:
    """`FROM ... WHERE ...` for a ledger's records (as `r`) of the business days
    [day_from, day_to]: through the statement files that hold those days, a range of
    record ids each (models.tables.StatementFile), so SQLite reads rows in id order from
    the files that have them. `+r.ledger_id` keeps SQLite off the identity index, which
    would walk every day the ledger has; a file's own rows are those with its id (on
    PostgreSQL, other files' rows can fall inside its range)."""
    lo, hi = _day_lit(sqlite, day_from), _day_lit(sqlite, day_to)
    return ("FROM statement_file f CROSS JOIN record r "
            f"WHERE {_files_of_days_sql(ledger, lo, hi)} "
            "AND r.id BETWEEN f.first_record_id AND f.last_record_id AND r.file_id = f.id "
            f"AND +r.ledger_id = {int(ledger)} AND r.business_day BETWEEN {lo} AND {hi}")


def _files_of_days_sql(ledger: int, lo: str, hi: str) -> str:
    """SQL condition on `f`: the statement files (of the ledger's merchant and side) that
    hold records of the days [lo, hi] (date literals)."""
    return (f"f.merchant_id = (SELECT merchant_id FROM ledger WHERE id = {int(ledger)}) "
            f"AND f.side = (SELECT side FROM ledger WHERE id = {int(ledger)}) "
            f"AND f.last_day >= {lo} AND f.first_day <= {hi}")


def file_paths(url: str) -> dict[int, str]:
    """statement file id -> path (the engine's evidence names files by id)."""
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, path FROM statement_file")
        return dict(cur.fetchall())


def _nulls_for_empty(table: pa.Table, names: tuple[str, ...]) -> pa.Table:
    for name in names:
        table = table.set_column(table.schema.get_field_index(name), name, empty_as_null(table[name]))
    return table


def coverage(url: str, merchant_id: str) -> dict[tuple[str, str], date]:
    """(source, side) -> the latest business day delivered by that source's statements."""
    with adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT source, side, max(business_day) FROM statement_file "
            f"WHERE merchant_id = {_lit(merchant_id)} AND business_day IS NOT NULL GROUP BY source, side"
        )
        rows = cur.fetchall()
    return {(s, side): _as_date(d) for s, side, d in rows}


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _lit(value: str) -> str:
    """A SQL string literal (values here are ours or hex digests, but quote them properly anyway)."""
    return "'" + str(value).replace("'", "''") + "'"


def _ts_text(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


def write_few(url: str, *, merchant_id: str, source: str, side: str, fmt: str, path: str, sha256: str,
              control_totals: dict, records: list[dict]) -> StoredFile:
    """A handful of records (a payment notification) as one statement, in one transaction.

    The same rules as `write_statement` (a known sha256 is a no-op; a record whose identity
    (ledger, kind, ref) is stored already is kept once), through SQLAlchemy instead of ADBC:
    `recon serve` pools SQLite connections and must not open ADBC's own SQLite beside them
    (models/db.py), and one row needs no bulk path. Records carry the columns of `record`
    except ledger_id, file_id and line. The statement has no business day: a notification
    is not the channel's statement of a day (core/completeness never counts it as one).
    """
    from sqlalchemy.dialects import postgresql, sqlite  # here: 60 ms of start-up for every `recon` command
    from sqlmodel import select

    from models.tables import Record, StatementFile

    ledger = ledger_ids(url, merchant_id, {(source, side)})[(source, side)]
    engine = get_engine(url)
    dialect_insert = sqlite.insert if is_sqlite(url) else postgresql.insert
    with engine.connect() as conn:
        known = conn.execute(select(StatementFile.id).where(StatementFile.merchant_id == merchant_id,
                                                            StatementFile.sha256 == sha256)).scalar()
        if known is not None:
            return StoredFile(known, 0, True)
        try:
            file_id = conn.execute(sa_insert(StatementFile).values(
                merchant_id=merchant_id, source=source, side=side, format=fmt, path=path, sha256=sha256,
                business_day=None, row_count=len(records), new_rows=0,
                control_totals=json.dumps(control_totals, ensure_ascii=False, sort_keys=True), duplicates="[]",
                ingested_at=datetime.now(timezone.utc)).returning(StatementFile.id)).scalar_one()
        except IntegrityError:  # the same notification, stored by a concurrent request
            conn.rollback()
            return StoredFile(conn.execute(select(StatementFile.id).where(
                StatementFile.merchant_id == merchant_id, StatementFile.sha256 == sha256)).scalar_one(), 0, True)
        ids, days = [], []
        for line, r in enumerate(records, start=1):
            stored = conn.execute(dialect_insert(Record).values(
                ledger_id=ledger, file_id=file_id, line=line, **r).on_conflict_do_nothing(
                index_elements=["ledger_id", "kind", "ref"]).returning(Record.id)).scalar()
            if stored is not None:
                ids.append(stored)
                days.append(r["business_day"])
        ranges = dict(first_record_id=min(ids), last_record_id=max(ids), first_day=min(days), last_day=max(days)) \
            if ids else {}
        conn.execute(sa_update(StatementFile).where(StatementFile.id == file_id).values(new_rows=len(ids), **ranges))
        conn.commit()
    return StoredFile(file_id, len(ids), False)
