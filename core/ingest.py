"""Ingest: identify -> parse -> validate -> write, one database transaction per file.

A file's SHA-256 makes re-ingesting it a no-op. A bad file is rejected whole, with the
file name, line and reason, and leaves nothing behind.
"""

from __future__ import annotations

import glob
import hashlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from core import completeness, store
from core.config import Config, MerchantConfig
from core.sources import REGISTRY, InputFile, ParseError


class IngestError(Exception):
    pass


@dataclass(frozen=True)
class IngestResult:
    path: str
    source: str
    format: str
    business_day: date | None
    rows: int
    new_rows: int
    file_id: int
    already_ingested: bool


def configured_sources(merchant: MerchantConfig) -> list:
    out = []
    for s in merchant.sources:
        cls = REGISTRY.get(s.kind)
        if cls is None:
            raise IngestError(f"merchant {merchant.id}: source {s.name!r} has unknown kind {s.kind!r} "
                              f"(known: {', '.join(sorted(REGISTRY))})")
        out.append((s, cls(s, merchant)))
    return out


def identify(file: InputFile, merchant: MerchantConfig, only: str | None = None):
    """The one configured source (or the source named `only`) that claims this file; else an error."""
    claims = [(cfg, src) for cfg, src in configured_sources(merchant)
              if (only is None or cfg.name == only) and src.identify(file)]
    if len(claims) == 1:
        return claims[0]
    if len(claims) > 1:
        names = ", ".join(f"{c.name} ({s.format})" for c, s in claims)
        raise ParseError(file.path, f"claimed by more than one source: {names}")
    if file.is_zip:
        file.members  # a damaged archive says so here, which helps more than "unknown format"
    if only is not None:
        kind = next((c.kind for c in merchant.sources if c.name == only), None)
        raise ParseError(file.path, f"source {only} ({kind}) of merchant {merchant.id} does not recognise this file")
    kinds = ", ".join(sorted({c.kind for c in merchant.sources})) or "none configured"
    raise ParseError(file.path, f"no configured source of merchant {merchant.id} recognises this file "
                                f"(configured kinds: {kinds})")


def ingest_file(cfg: Config, merchant: MerchantConfig, path: str | Path, day: date | None = None,
                source: str | None = None) -> IngestResult:
    """Ingest one file; `source` restricts identification to that configured source (pulled files)."""
    outcome = ingest_files(cfg, merchant, [Path(path)], day, only=source, workers=1)[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def ingest_files(cfg: Config, merchant: MerchantConfig, paths: list[Path], day: date | None = None,
                 on_done=None, workers: int = 2, only: str | None = None) -> list[IngestResult | Exception]:
    """Several files at once: known ones skipped first, the rest parsed and stored in the
    order given. -> one result (or the error) per path.

    A pipeline one file deep: while file k is written, file k+1 is parsed (and put in key
    order) in a worker thread. Writing is one core's work (SQLite has one writer), so
    parsing two files at once would only make both late; parsing the next one beside the
    write uses the other core. Parsing touches no database, which is what makes the worker
    safe: ADBC's SQLite copy and Python's sqlite3 must never hold the file at the same
    moment (see models/db.py). `workers` threads hash the files first.
    """
    url = cfg.database.url
    out: list[IngestResult | Exception | None] = [None] * len(paths)
    todo = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # hashlib leaves the GIL
        hashes = list(pool.map(_sha256_or_error, paths))
    for n, (path, sha) in enumerate(zip(paths, hashes)):
        if isinstance(sha, ParseError):
            out[n] = sha
            continue
        known = store.find_file(url, merchant.id, sha)
        if known is not None:
            file = InputFile.read(path)
            source_cfg, parser = identify(file, merchant, only=only)
            out[n] = IngestResult(display_path(path), source_cfg.name, parser.format, None, 0, 0, known, True)
            if on_done:
                on_done(path)
        else:
            todo.append((n, path, sha))

    def parse(path):
        file = InputFile.read(path)
        source_cfg, parser = identify(file, merchant, only=only)
        try:
            parsed = parser.parse(file)
        except ParseError as exc:
            return source_cfg, parser, None, None, exc
        records = _with_source(parsed.records, parser.side, source_cfg.name)
        return source_cfg, parser, parsed, store.prepare(url, records), None

    for (n, path, sha), future in _one_ahead(todo, lambda item: parse(item[1])):
        try:
            source_cfg, parser, parsed, records, error = future.result()
            if error is not None:
                completeness.record_rejection(url, merchant, source_cfg.name, day, str(Path(path).resolve()),
                                              sha, str(error))
                raise error
            out[n] = store_parsed(cfg, merchant, source_cfg, parser, parsed, display_path(path),
                                  str(Path(path).resolve()) + (f"!{parsed.member}" if parsed.member else ""),
                                  sha, day, records=records)
        except (ParseError, IngestError) as exc:
            out[n] = exc
        if on_done:
            on_done(path)
    return out


def _one_ahead(items: list, work):
    """-> (item, future of work(item)) in order, with the next item's work started before
    the current one is handed out (one worker thread, so at most two results in memory)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = deque()
        for item in items:
            futures.append((item, pool.submit(work, item)))
            if len(futures) == 2:
                yield futures.popleft()
        while futures:
            yield futures.popleft()


def _sha256_or_error(path) -> str | ParseError:
    try:
        return _sha256(path)
    except ParseError as exc:
        return exc
    except OSError as exc:
        return ParseError(path, str(exc))


def _sha256(path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        raise ParseError(path, "file not found") from None
    except IsADirectoryError:
        raise ParseError(path, "is a folder, not a file") from None
    return digest.hexdigest()


def ingest_sql(cfg: Config, merchant: MerchantConfig, source_cfg, day: date) -> IngestResult:
    """Read one day of orders from the merchant's database (kind orders_sql) and store them.

    The statement's identity is (source, day, content hash): the same rows again are a no-op.
    """
    from core.sources.orders_sql import OrdersSql, SqlReadError

    reader = OrdersSql(source_cfg, merchant)
    label = reader.label(day)
    try:
        parsed, digest = reader.read(day)
    except SqlReadError as exc:
        raise IngestError(str(exc)) from None
    except ParseError as exc:
        sha = hashlib.sha256(f"orders_sql\0{source_cfg.name}\0{day}\0rejected\0{exc}".encode()).hexdigest()
        completeness.record_rejection(cfg.database.url, merchant, source_cfg.name, day, label, sha, str(exc))
        raise
    sha = hashlib.sha256(f"orders_sql\0{source_cfg.name}\0{day}\0{digest}".encode()).hexdigest()
    known = store.find_file(cfg.database.url, merchant.id, sha)
    if known is not None:
        return IngestResult(label, source_cfg.name, reader.format, day, 0, 0, known, True)
    return store_parsed(cfg, merchant, source_cfg, reader, parsed, label, label, sha, day)


def store_parsed(cfg: Config, merchant: MerchantConfig, source_cfg, source, parsed, shown: str, path: str,
                 sha: str, day: date | None, records: pa.Table | None = None) -> IngestResult:
    """Write parsed records as one statement (one transaction); `sha` is the statement's identity.
    `records`: the parsed records already through `store.prepare`, where the caller did that."""
    url = cfg.database.url
    prepared = records is not None
    if not prepared:
        records = _with_source(parsed.records, source.side, source_cfg.name)
    store.ensure_merchant(url, merchant)  # only now: a rejected file leaves no row behind
    ledgers = store.ledger_ids(url, merchant.id, {(s, source.side) for s in pc.unique(records["source"]).to_pylist()})
    records = records.append_column("ledger_id", _ledger_column(records, ledgers, source.side))
    business_day = day or parsed.business_day
    stored = store.write_statement(
        url, merchant_id=merchant.id, source=source_cfg.name, side=source.side, fmt=source.format,
        path=path, sha256=sha, business_day=business_day, control_totals=parsed.control_totals, records=records,
        prepared=prepared,
    )
    return IngestResult(shown, source_cfg.name, source.format, business_day, parsed.row_count,
                        stored.new_rows, stored.file_id, stored.already_ingested)


def _with_source(records: pa.Table, side: str, source_name: str) -> pa.Table:
    """A channel statement's records all belong to the source that read it."""
    if side != "channel":
        return records
    return records.set_column(records.schema.get_field_index("source"), "source",
                              pa.array([source_name] * records.num_rows, pa.string()))


def _ledger_column(records: pa.Table, ledgers: dict, side: str) -> pa.Array:
    names = list({s for s, _ in ledgers})
    idx = pc.index_in(records["source"], value_set=pa.array(names, pa.string()))  # typed: a statement may be empty
    ids = pa.array([ledgers[(n, side)] for n in names], pa.int64())
    return pc.take(ids, idx)


def configured_files(cfg: Config, merchant: MerchantConfig) -> list[Path]:
    """The files a merchant's sources point at (`files` globs, `folder`), relative to the config."""
    found: set[Path] = set()
    for s in merchant.sources:
        for pattern in s.files:  # relative to the config's folder, or absolute
            found.update(p for p in map(Path, glob.glob(str(cfg.base_dir / pattern))) if p.is_file())
        if s.folder:
            folder = cfg.base_dir / s.folder
            found.update(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(found)


def display_path(path: str | Path) -> str:
    """Paths under the working directory are kept relative, so evidence reads short."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)
