"""What every statement source shares: the input file, the protocol, the errors.

A source is a small class (see STYLE.md §1): `identify(file)` answers from the file's
own content, `parse(file)` returns normalised records as an Arrow table (schema
`RECORD_FIELDS`) plus the file's control totals, already checked.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Protocol

import pyarrow as pa

from core.config import MerchantConfig, SourceConfig

# Refuse inputs that would not fit comfortably in memory, and zip bombs, before inflating.
MAX_UNCOMPRESSED_BYTES = 4 * 1024**3
MAX_COMPRESSION_RATIO = 200

# The normalised record, as every source returns it (before the store adds ids).
RECORD_FIELDS = pa.schema(
    [
        ("line", pa.int64()),
        ("source", pa.string()),  # internal side: the channel the order was paid through
        ("kind", pa.string()),  # payment | refund | fee | payout | adjustment
        ("ref", pa.string()),  # identity of the row inside its ledger
        ("txn_id", pa.string()),
        ("order_id", pa.string()),
        ("amount", pa.int64()),  # signed minor units: refunds are negative
        ("currency", pa.string()),
        ("fee", pa.int64()),
        ("discount", pa.int64()),
        ("status", pa.string()),
        ("occurred_at", pa.timestamp("us")),  # UTC
        ("business_day", pa.date32()),  # in the statement's declared time zone
        ("payer", pa.string()),
        ("memo", pa.string()),
    ]
)


class ParseError(Exception):
    """A file that cannot be ingested, phrased as `file line N: field=value: reason`."""

    def __init__(self, path, reason: str, line: int | None = None, field: str | None = None, value=None):
        self.path, self.reason, self.line, self.field, self.value = str(path), reason, line, field, value
        where = self.path if line is None else f"{self.path} line {line}"
        what = "" if field is None else f" {field}={value!r}:"
        super().__init__(f"{where}:{what} {reason}")


def summary_number(path, name: str, value: str, line: int):
    """A number from a summary / footer row, or a ParseError naming it."""
    from decimal import Decimal, InvalidOperation

    try:
        return Decimal(value)
    except (ArithmeticError, InvalidOperation):
        raise ParseError(path, "summary value is not a number", line=line, field=name, value=value) from None


class ControlTotalError(ParseError):
    """The file's own totals (summary rows, footers) disagree with its rows."""


@dataclass
class InputFile:
    """A statement file as read from disk: gzip is undone here, zips are opened on demand."""

    path: Path
    raw: bytes
    compression: str | None = None

    @classmethod
    def read(cls, path: str | Path) -> "InputFile":
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_UNCOMPRESSED_BYTES:
                raise ParseError(path, f"file is {size} bytes, over the {MAX_UNCOMPRESSED_BYTES} byte limit")
            data = path.read_bytes()
        except FileNotFoundError:
            raise ParseError(path, "file not found") from None
        except IsADirectoryError:
            raise ParseError(path, "is a folder, not a file") from None
        if data[:2] == b"\x1f\x8b":
            return cls(path, _gunzip(path, data), "gzip")
        return cls(path, data)

    @property
    def is_zip(self) -> bool:
        return self.raw[:4] == b"PK\x03\x04"

    @cached_property
    def members(self) -> dict[str, bytes]:
        """Zip members by decoded name (GBK names decoded as GBK), size-checked."""
        if not self.is_zip:
            return {}
        try:
            zf = zipfile.ZipFile(io.BytesIO(self.raw))
            infos = [i for i in zf.infolist() if not i.is_dir()]
        except zipfile.BadZipFile as exc:
            raise ParseError(self.path, f"damaged zip archive ({exc})") from None
        total = sum(i.file_size for i in infos)
        if total > MAX_UNCOMPRESSED_BYTES or total > MAX_COMPRESSION_RATIO * max(len(self.raw), 1) + 10**6:
            raise ParseError(self.path, f"zip would inflate to {total} bytes from {len(self.raw)}: refused as a zip bomb")
        out: dict[str, bytes] = {}
        for info in infos:
            name = _member_name(info)
            try:
                with zf.open(info) as fh:
                    data = fh.read(info.file_size + 1)
            except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as exc:
                raise ParseError(self.path, f"zip member {name!r} is damaged or truncated ({exc})") from None
            if len(data) != info.file_size:
                raise ParseError(self.path, f"zip member {name!r} is not the size its header says")
            out[name] = data
        return out

    @cached_property
    def member_names(self) -> list[str]:
        """Names only, read from the central directory; empty for a damaged zip."""
        try:
            return [_member_name(i) for i in zipfile.ZipFile(io.BytesIO(self.raw)).infolist()]
        except zipfile.BadZipFile:
            return []

    def head(self, size: int = 4096) -> str:
        """The start of the file as text, decoded leniently: for identify() only."""
        return sniff_text(self.raw[:size])


def _member_name(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x800:
        return info.filename
    try:  # no UTF-8 flag: Chinese tools write GBK names, which zipfile read as cp437
        return info.filename.encode("cp437").decode("gb18030")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


def sniff_text(data: bytes) -> str:
    """Lenient decoding for identify(): each line as UTF-8, else GB18030.

    Line by line, so that one badly encoded row near the top does not hide the header;
    the strict decode in parse() then names that row.
    """
    data = data.removeprefix(b"\xef\xbb\xbf")
    return "\n".join(_sniff_line(line) for line in data.split(b"\n"))


def _sniff_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start > len(line) - 4 and exc.reason == "unexpected end of data":
            return line[: exc.start].decode("utf-8", errors="replace")  # cut mid-character
        return line.decode("gb18030", errors="replace")


def _gunzip(path: Path, data: bytes) -> bytes:
    out = io.BytesIO()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
            while chunk := gz.read(1 << 20):
                out.write(chunk)
                if out.tell() > MAX_UNCOMPRESSED_BYTES or out.tell() > MAX_COMPRESSION_RATIO * len(data) + 10**6:
                    raise ParseError(path, f"gzip inflates past {out.tell()} bytes from {len(data)}: refused as a zip bomb")
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        raise ParseError(path, f"damaged or truncated gzip data ({exc})") from None
    return out.getvalue()


def decode_text(path, data: bytes, encodings: tuple[str, ...]) -> str:
    """Strictly decode with the first encoding that fits; name the line if none does."""
    first_error: UnicodeDecodeError | None = None
    for enc in encodings:
        try:
            return data.decode(enc)
        except UnicodeDecodeError as exc:
            first_error = first_error or exc
    assert first_error is not None
    line = data.count(b"\n", 0, first_error.start) + 1
    raise ParseError(
        path,
        f"not valid {' or '.join(encodings)} text (byte {first_error.start} = "
        f"{data[first_error.start:first_error.start + 1].hex()})",
        line=line,
    )


def mode_day(records: pa.Table) -> date | None:
    """A file's business day: the day most of its rows fall on (ties: the earliest)."""
    days = DayCounts()
    days.add(records)
    return days.mode()


class DayCounts:
    """`mode_day` over a statement read in pieces: rows per business day, added piece by piece."""

    def __init__(self) -> None:
        self.counts: dict[date, int] = {}

    def add(self, records: pa.Table) -> None:
        for c in records["business_day"].value_counts().to_pylist():
            if c["values"] is not None:
                self.counts[c["values"]] = self.counts.get(c["values"], 0) + c["counts"]

    def mode(self) -> date | None:
        """The day most rows fall on (ties: the earliest)."""
        return min(self.counts, key=lambda d: (-self.counts[d], d)) if self.counts else None


@dataclass
class Parsed:
    format: str
    side: str
    records: pa.Table
    business_day: date | None
    control_totals: dict = field(default_factory=dict)
    member: str | None = None  # the zip member the records came from, for evidence

    @property
    def row_count(self) -> int:
        return self.records.num_rows


@dataclass(frozen=True)
class Statement:
    """How a statement read in pieces ends: what `Parsed` says besides its records."""

    business_day: date | None
    control_totals: dict
    row_count: int
    member: str | None = None


# Body bytes per piece when a large statement is read in pieces (about 65,000 WeChat Pay
# bill rows or 150,000 orders): small enough that a piece's columns stay in cache while the
# writer binds them and its buffers are reused instead of faulted in afresh (1M day, A/B:
# ingest 6.7 s with 32 MB pieces, 6.5 s with 16 MB, and 0.7 s less kernel time), big
# enough that Arrow's per-call costs do not show.
PIECE_BYTES = 16 << 20


def pieces(source, file: InputFile, ramp: bool = True):
    """A source's records as Arrow tables in file order, then one `Statement`.

    Sources that read large files (`parse_pieces`) hand back a piece as soon as it is
    typed and checked, so the store writes it while the next piece is read; the file's
    control totals are checked after the last piece (the writer's transaction then rolls
    every piece back). Any other source is one piece: `parse`. `ramp`: the first pieces
    smaller, for a writer that waits for them (`tabular.line_pieces`).
    """
    if hasattr(source, "parse_pieces"):
        yield from source.parse_pieces(file, PIECE_BYTES, ramp)
        return
    parsed = source.parse(file)
    yield parsed.records
    yield Statement(parsed.business_day, parsed.control_totals, parsed.row_count, parsed.member)


def collect(fmt: str, side: str, stream) -> Parsed:
    """`pieces` (or a source's `parse_pieces`) gathered into one `Parsed`."""
    tables = list(stream)
    end = tables.pop()
    records = pa.concat_tables(tables) if len(tables) != 1 else tables[0]
    return Parsed(fmt, side, records, end.business_day, end.control_totals, end.member)


class ChannelSource:
    """Base of a channel's statement source: the statement's declared time zone, from config."""

    side: ClassVar[str] = "channel"

    def __init__(self, source: SourceConfig, merchant: MerchantConfig) -> None:
        self.source, self.merchant, self.tz = source, merchant, source.timezone


def first_line(file: InputFile) -> str:
    """The first line that is neither blank nor a "# " comment (copies of documentation
    examples carry such lines above a bill; the channels themselves never write them)."""
    for line in file.head().splitlines():
        if line.strip() and not line.startswith("# "):
            return line
    return ""


class Source(Protocol):
    """The protocol every statement source implements."""

    format: ClassVar[str]  # e.g. "wechatpay.trade_bill"
    side: ClassVar[str]  # "channel" or "internal"

    def __init__(self, source: SourceConfig, merchant: MerchantConfig) -> None: ...

    @classmethod
    def identify(cls, file: InputFile) -> bool: ...

    def parse(self, file: InputFile) -> Parsed: ...
