"""Ingest: identify -> parse -> validate -> write, one database transaction per file.

A file's SHA-256 makes re-ingesting it a no-op. A bad file is rejected whole, with the
file name, line and reason, and leaves nothing behind.
"""

from __future__ import annotations

import glob
import hashlib
import os
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa

from core import store
from core.config import Config, MerchantConfig
from core.sources import REGISTRY, InputFile, ParseError
from core.sources.base import PIECE_BYTES, Statement, pieces


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
    outcome = ingest_files(cfg, merchant, [Path(path)], day, only=source)[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def ingest_files(cfg: Config, merchant: MerchantConfig, paths: list[Path], day: date | None = None,
                 on_done=None, only: str | None = None) -> list[IngestResult | Exception]:
    """Several files at once, stored in the order given (a file stored already is skipped).
    -> one result (or the error) per path.

    A pipeline (`_Reader`): while a piece of a file is written, the next pieces (of that
    file and the next) are parsed and put in key order in reader threads. Writing is one
    core's work (SQLite has one writer); reading beside it uses the other. Each file is one
    transaction however many pieces it has. The readers start at once; one more thread
    hashes the files meanwhile (the first file first: the writer waits for its hash), and a
    file found stored already is not parsed further.
    """
    url = cfg.database.url
    out: list[IngestResult | Exception | None] = [None] * len(paths)
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recon-hash")
    try:
        hashes = [hasher.submit(_sha256_or_error, path) for path in paths]  # hashlib leaves the GIL
        with _Reader(list(enumerate(paths)), merchant, only, url) as reader:
            _store_in_order(cfg, merchant, paths, hashes, reader, day, on_done, out)
    finally:
        hasher.shutdown(cancel_futures=True)
    return out


def _store_in_order(cfg: Config, merchant: MerchantConfig, paths: list[Path], hashes: list, reader: "_Reader",
                    day: date | None, on_done, out: list) -> None:
    url = cfg.database.url
    for n, path in enumerate(paths):
        try:
            sha = hashes[n].result()
            if isinstance(sha, ParseError):
                reader.skip(n)
                raise sha
            known = store.find_file(url, merchant.id, sha)
            if known is not None:
                reader.skip(n)
                out[n] = _stored_already(reader, n, path, known)
            else:
                out[n] = _store_pieces(cfg, merchant, reader, n, path, sha, day)
        except (ParseError, IngestError) as exc:
            out[n] = exc
        reader.drain(n)
        if on_done:
            on_done(path)


def _stored_already(reader: "_Reader", n: int, path: Path, file_id: int) -> IngestResult:
    kind, got = reader.next(n)
    if kind == "unread":  # stored once, but no configured source reads it now
        raise got
    source_cfg, parser = got
    return IngestResult(display_path(path), source_cfg.name, parser.format, None, 0, 0, file_id, True)


def _store_pieces(cfg: Config, merchant: MerchantConfig, reader: "_Reader", n: int, path: Path, sha: str,
                  day: date | None) -> IngestResult:
    """Write file n's pieces as the reader hands them over, in one transaction."""
    url = cfg.database.url
    kind, got = reader.next(n)
    if kind == "unread":  # not identified: not a statement of this merchant
        raise got
    source_cfg, parser = got
    error = None
    with store.StatementWriter(url, merchant_id=merchant.id, source=source_cfg.name, side=parser.side,
                               fmt=parser.format, path=str(Path(path).resolve()), sha256=sha,
                               merchant=merchant, snapshot_days=cfg.database.snapshot_days) as writer:
        while True:
            kind, got = reader.next(n)
            if kind == "piece":
                if writer.known is None:  # else stored meanwhile by another process: a no-op
                    writer.add(got)
            elif kind == "end":
                business_day = day or got.business_day
                stored = writer.finish(business_day=business_day, control_totals=got.control_totals,
                                       row_count=got.row_count,
                                       path=str(Path(path).resolve()) + (f"!{got.member}" if got.member else ""))
                break
            else:  # "rejected": leaving the block without finish() rolls every piece back
                error = got
                break
    if error is not None:
        from core import completeness  # the ORM, only for a rejected file

        completeness.record_rejection(url, merchant, source_cfg.name, day, str(Path(path).resolve()), sha, str(error))
        raise error
    return IngestResult(display_path(path), source_cfg.name, parser.format, business_day, got.row_count,
                        stored.new_rows, stored.file_id, stored.already_ingested)


class _Reader:
    """Reads, identifies and parses the files in threads of their own, and hands each
    file's pieces over in order: (n, "unread", error) | (n, "start", (source config,
    source)), then (n, "piece", prepared records)..., then (n, "end", Statement) |
    (n, "rejected", error) | (n, "skipped", None) for a file the writer said it does not
    want (`skip`).

    While the store writes a piece (one core: SQLite has one writer), the next pieces are
    read and typed. Two files are read at once (worker k reads files k, k + 2, ...; the
    second starts once the first has handed over its first piece), so that when the writer
    has to wait for the reader of its file, the other reader still keeps the second core
    busy: the parse of a million-row bill costs about as much as writing it, and one reader
    left the writer idle for 1.6 s of a 1M day. A file may be read up to READ_AHEAD_BYTES
    ahead of the writer, so memory stays bounded whatever its size; a reader reading ahead
    of an earlier file runs at a lower priority (`_yield_to_earlier_files`). The threads
    never touch the database, which is what makes them safe: ADBC's SQLite copy and
    Python's sqlite3 must never hold the file at the same moment (see models/db.py).
    """

    ENDS = ("unread", "end", "rejected", "skipped")
    FILES_AT_ONCE = 2
    # A bill read ahead while the writer stores the orders fills the core the writer leaves
    # idle; with only three pieces of slack it stopped after 48 MB and left that core idle
    # ~1 s of a 1M day (perf timeline). 256 MB is 16 pieces: at 10M, ~0.5 GB of Arrow a file.
    READ_AHEAD_BYTES = 256 << 20

    def __init__(self, todo: list[tuple[int, Path]], merchant: MerchantConfig, only: str | None, url: str) -> None:
        self.todo, self.merchant, self.only, self.url = todo, merchant, only, url
        self.queues = {n: queue.Queue(maxsize=max(self.READ_AHEAD_BYTES // PIECE_BYTES, 3)) for n, _ in todo}
        self.rank = {n: k for k, (n, _) in enumerate(todo)}  # 0: the file the writer stores first
        self.nice = _nice()
        self.begun = {n: threading.Event() for n, _ in todo}  # file n has handed over something
        self.stop = threading.Event()
        self.skipped: set[int] = set()
        self.ended = -1  # the last file whose end the writer has taken
        self.threads = [threading.Thread(target=self._run, args=(todo[k::self.FILES_AT_ONCE],),
                                         name=f"recon-read-{k}", daemon=True)
                        for k in range(min(self.FILES_AT_ONCE, len(todo)))]

    def __enter__(self) -> "_Reader":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            while thread.is_alive():  # unblock a put() that waits for room
                for q in self.queues.values():
                    try:
                        q.get_nowait()
                    except queue.Empty:
                        pass
                thread.join(timeout=0.05)

    def next(self, n: int):
        kind, got = self.queues[n].get()
        if kind == "crash":
            raise got
        if kind in self.ENDS:
            self.ended = n
        return kind, got

    def skip(self, n: int) -> None:
        """File n is not to be parsed (stored already, or unreadable): the reader stops it."""
        self.skipped.add(n)

    def drain(self, n: int) -> None:
        """Take what is left of file n (a skipped file's start and pieces already read)."""
        while self.ended < n:
            self.next(n)

    def _put(self, n: int, kind: str, got) -> bool:
        if kind != "start":
            self.begun[n].set()
        while not self.stop.is_set():
            try:
                self.queues[n].put((kind, got), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, files: list[tuple[int, Path]]) -> None:
        for n, path in files:
            try:
                while n > 0 and not self.begun[n - 1].wait(0.1):  # the first file's first piece first
                    if self.stop.is_set():
                        return
                if not self._read_one(n, path):
                    return
            except BaseException as exc:  # a bug, not a bad file: the writer re-raises it
                self._put(n, "crash", exc)
                return

    def _read_one(self, n: int, path: Path) -> bool:
        _yield_to_earlier_files(self.nice, self.rank[n])
        try:
            file = InputFile.read(path)
            source_cfg, parser = identify(file, self.merchant, only=self.only)
        except ParseError as exc:
            return self._put(n, "unread", exc)
        if not self._put(n, "start", (source_cfg, parser)):
            return False
        if n in self.skipped:
            return self._put(n, "skipped", None)
        try:
            for piece in pieces(parser, file, ramp=n == self.todo[0][0]):  # the writer waits only for the first
                if n in self.skipped:
                    return self._put(n, "skipped", None)
                if isinstance(piece, Statement):
                    return self._put(n, "end", piece)
                records = store.prepare(self.url, _with_source(piece, parser.side, source_cfg.name))
                if not self._put(n, "piece", records):
                    return False
        except ParseError as exc:
            return self._put(n, "rejected", exc)
        return True


# Niceness a reader thread adds per file ahead of its own in the batch: on two cores the
# writer, the reader of the file it stores and a reader of the next file would otherwise
# share the cores evenly, and the writer, which everything waits for, got ~2/3 of one
# (1M day: ingest 5.9 -> 5.3 s with this, Arrow's own CSV threads off and 16 pieces of
# read-ahead; each alone gained ~0.2 s). A reader only ever lowers its own priority.
READ_AHEAD_NICE = 5


def _nice() -> int | None:
    """The calling thread's niceness, where threads have their own (Linux); else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except OSError:
        return None


def _yield_to_earlier_files(base: int | None, rank: int) -> None:
    """Run this reader thread below the writer and the readers of earlier files: niceness
    `base` + READ_AHEAD_NICE per earlier file (Linux: per thread; elsewhere nothing)."""
    if base is None or rank <= 0:
        return
    tid = threading.get_native_id()
    try:
        wanted = min(base + READ_AHEAD_NICE * rank, 19)
        if wanted > os.getpriority(os.PRIO_PROCESS, tid):
            os.setpriority(os.PRIO_PROCESS, tid, wanted)
    except OSError:  # not allowed here (a sandbox): the order of files still holds
        pass


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
        from core import completeness

        completeness.record_rejection(cfg.database.url, merchant, source_cfg.name, day, label, sha, str(exc))
        raise
    sha = hashlib.sha256(f"orders_sql\0{source_cfg.name}\0{day}\0{digest}".encode()).hexdigest()
    known = store.find_file(cfg.database.url, merchant.id, sha)
    if known is not None:
        return IngestResult(label, source_cfg.name, reader.format, day, 0, 0, known, True)
    return store_parsed(cfg, merchant, source_cfg, reader, parsed, label, label, sha, day)


def store_parsed(cfg: Config, merchant: MerchantConfig, source_cfg, source, parsed, shown: str, path: str,
                 sha: str, day: date | None) -> IngestResult:
    """Write parsed records as one statement (one transaction); `sha` is the statement's identity."""
    url = cfg.database.url
    business_day = day or parsed.business_day
    with store.StatementWriter(url, merchant_id=merchant.id, source=source_cfg.name, side=source.side,
                               fmt=source.format, path=path, sha256=sha, merchant=merchant,
                               snapshot_days=cfg.database.snapshot_days) as writer:
        if writer.known is None:
            writer.add(store.prepare(url, _with_source(parsed.records, source.side, source_cfg.name)))
        stored = writer.finish(business_day=business_day, control_totals=parsed.control_totals,
                               row_count=parsed.row_count)
    return IngestResult(shown, source_cfg.name, source.format, business_day, parsed.row_count,
                        stored.new_rows, stored.file_id, stored.already_ingested)


def _with_source(records: pa.Table, side: str, source_name: str) -> pa.Table:
    """A channel statement's records all belong to the source that read it."""
    if side != "channel":
        return records
    return records.set_column(records.schema.get_field_index("source"), "source",
                              pa.repeat(pa.scalar(source_name, pa.string()), records.num_rows))


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
