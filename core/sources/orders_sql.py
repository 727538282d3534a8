"""The merchant's orders read straight from its own database (kind `orders_sql`).

    [merchants.sources.sql]
    url = "postgresql://reader:${SHOP_DB_PASSWORD}@shop-db/shop"
    query = "SELECT id AS order_id, pay_channel AS channel, total AS amount, ... FROM orders WHERE paid_at::date = :day"

The query returns one business day of orders (`:day` is bound to that day: a date, or its
ISO text on SQLite, which has no date type) with the columns of the orders export
(order_id, channel, amount, currency, status, paid_at, ...; or mapped with `columns`).
Rows are fetched `chunk_rows` at a time (a server-side cursor where the driver has one)
and each chunk becomes an Arrow batch of text columns, exactly what the CSV reader gives
the orders export, so both share one normalisation (`OrdersExport.normalise`): the same
status words, channel names, exact money and time-zone rules, and the same errors, with
"line" = the row's position in the query result.

Identity: one statement per (source, day, content hash). Pulling the same day again with
the same rows is a no-op; changed rows make a new statement (records already stored keep
their identity, as with overlapping exports). Evidence points at `sql:<source>/<day>`.
"""

from __future__ import annotations

import hashlib
import io
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from core.config import MerchantConfig, SourceConfig
from core.sources.base import InputFile, ParseError, Parsed
from core.sources.orders import OrdersExport


class SqlReadError(Exception):
    """The merchant's database could not be read (message without the password)."""


class OrdersSql:
    format = "orders.sql"
    side = "internal"

    def __init__(self, source: SourceConfig, merchant: MerchantConfig) -> None:
        self.name = source.name
        self.sql = source.sql
        self.orders = OrdersExport(source, merchant)

    def identify(self, file: InputFile) -> bool:
        return False  # reads a database, never a file

    def parse(self, file: InputFile) -> Parsed:
        raise ParseError(file.path, f"source {self.name} reads its orders from a database, not from files")

    def label(self, day: date) -> str:
        return f"sql:{self.name}/{day.isoformat()}"

    def read(self, day: date) -> tuple[Parsed, str]:
        """The day's orders as records, and a hash of their content (order-independent)."""
        raw = pa.Table.from_batches(list(self._batches(day)))
        parsed = self.orders.normalise(raw, self.label(day))
        return parsed, content_hash(parsed.records)

    def _batches(self, day: date):
        if self.sql is None:
            raise SqlReadError(f"source {self.name}: kind orders_sql needs a [sql] table with url and query")
        url = self.sql.url.get_secret_value()
        u = make_url(url)
        engine = create_engine(url, poolclass=NullPool)
        bound = day.isoformat() if u.get_backend_name() == "sqlite" else day
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True, yield_per=self.sql.chunk_rows).execute(
                    text(self.sql.query), {"day": bound})
                names = self.orders._canonical([str(k) for k in result.keys()]) + ["line"]
                line = 1
                for rows in result.partitions(self.sql.chunk_rows):
                    columns = [_text(values) for values in zip(*rows)]
                    columns.append(pa.array(range(line, line + len(rows)), pa.int64()))
                    yield pa.RecordBatch.from_arrays(columns, names=names)
                    line += len(rows)
                if line == 1:  # no orders that day: still a statement (the shop was closed)
                    yield pa.RecordBatch.from_arrays([pa.array([], pa.string()) for _ in names[:-1]]
                                                     + [pa.array([], pa.int64())], names=names)
        except SQLAlchemyError as exc:
            shown = u.render_as_string(hide_password=True)
            message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if u.password:
                message = message.replace(str(u.password), "***")
            raise SqlReadError(f"source {self.name}: reading orders from {shown} failed: "
                               f"{exc.__class__.__name__}: {message}") from None
        finally:
            engine.dispose()


def _text(values: tuple) -> pa.Array:
    """One column of a chunk as text, formatted the way the orders export writes it."""
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):  # mixed types (SQLite): their text
        arr = pa.array([None if v is None else str(v) for v in values], pa.string())
    t = arr.type
    if pa.types.is_timestamp(t):
        # whole seconds (Arrow's %S would print fractions); an aware time keeps its offset
        seconds = arr.cast(pa.timestamp("s", t.tz), safe=False)
        arr = pc.strftime(seconds, "%Y-%m-%dT%H:%M:%S%z" if t.tz else "%Y-%m-%d %H:%M:%S")
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        arr = pc.cast(arr, pa.string())
    elif not pa.types.is_string(t):
        arr = arr.cast(pa.string())
    return pc.fill_null(arr, "")


def content_hash(records: pa.Table) -> str:
    """SHA-256 of the records without their line numbers, in a fixed order."""
    body = records.drop_columns(["line"]).sort_by([("kind", "ascending"), ("ref", "ascending")])
    buf = io.BytesIO()
    pacsv.write_csv(body, buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()
