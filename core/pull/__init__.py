"""Pulling statements: fetch each source's file for a day, then ingest it like any file.

Three ways a statement comes in, per configured source:
- an API (`[pull]` settings and a kind in PULLERS): `pull(day) -> Path` writes the file
  into the download folder, then it is ingested for that day and that source;
- the merchant's own database (kind orders_sql): read and stored as a statement;
- a drop folder (`folder`): complete files not yet ingested are ingested.

`pull_day` does all three for the selected sources and returns one outcome per item, so
the scheduler and the CLI report the same words. A file that fails ingest, or a download
that fails its hash, is remembered as rejected (core/completeness): it counts as not
arrived and the late break says why.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from functools import partial
from pathlib import Path

from core import completeness, store
from core.config import Config, ConfigError, MerchantConfig, SourceConfig
from core.ingest import IngestError, display_path, ingest_file, ingest_sql
from core.pull.alipay import AlipayBillPuller
from core.pull.base import FileRejected, NotAvailable, PullContext, PullError, log, redact, redacted_logs
from core.pull.folder import complete_files
from core.pull.stripe import StripeReportPuller
from core.pull.wechatpay import WeChatPayFundFlowPuller, WeChatPayTradeBillPuller
from core.sources import ParseError

# source kind -> puller (constructed with a PullContext; `.pull(day) -> Path`)
PULLERS = {
    "wechatpay": WeChatPayTradeBillPuller,
    "wechatpay_fundflow": WeChatPayFundFlowPuller,
    "alipay": partial(AlipayBillPuller, default_bill_type="trade"),
    "alipay_account": partial(AlipayBillPuller, default_bill_type="signcustomer"),
    "stripe": StripeReportPuller,
}


@dataclass(frozen=True)
class Outcome:
    source: str
    status: str  # ingested | already_ingested | not_available | rejected | failed
    detail: str
    path: str | None = None
    rows: int = 0
    new_rows: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("ingested", "already_ingested", "not_available")


def pullable(source: SourceConfig) -> bool:
    return source.kind == "orders_sql" or (source.pull is not None and source.kind in PULLERS) or bool(source.folder)


def puller(cfg: Config, merchant: MerchantConfig, source: SourceConfig):
    if source.kind not in PULLERS:
        raise ConfigError(f"source {source.name!r}: kind {source.kind} has no API to pull from "
                          f"(pullable kinds: {', '.join(sorted(PULLERS))})")
    return PULLERS[source.kind](PullContext(source, merchant, cfg.base_dir))


def pull(cfg: Config, merchant: MerchantConfig, source: SourceConfig, day: date) -> Path:
    """Fetch `source`'s statement of `day` into its download folder (not yet ingested)."""
    ctx = PullContext(source, merchant, cfg.base_dir)
    with redacted_logs(ctx.secrets):
        return puller(cfg, merchant, source).pull(day)


def pull_day(cfg: Config, merchant: MerchantConfig, day: date, sources: list[str] | None = None,
             apis: bool = True, folders: bool = True) -> list[Outcome]:
    """Pull and ingest `day` for the merchant's sources (all pullable ones, or those named)."""
    chosen = _chosen(merchant, sources)
    out: list[Outcome] = []
    for src in chosen:
        if apis and src.kind == "orders_sql":
            out.append(_from_database(cfg, merchant, src, day))
        elif apis and src.pull is not None and src.kind in PULLERS:
            out.append(_from_api(cfg, merchant, src, day))
    if folders:
        seen: set[Path] = set()
        for src in chosen:
            folder = (cfg.base_dir / src.folder).resolve() if src.folder else None
            if folder and folder not in seen:
                seen.add(folder)
                out.extend(scan_folder(cfg, merchant, folder, src.settle_seconds))
    return out


def _chosen(merchant: MerchantConfig, names: list[str] | None) -> list[SourceConfig]:
    if not names:
        return [s for s in merchant.sources if pullable(s)]
    chosen = []
    for name in names:
        src = merchant.source(name)
        if src is None:
            known = ", ".join(s.name for s in merchant.sources)
            raise ConfigError(f"merchant {merchant.id}: no source named {name!r} (known: {known})")
        if not pullable(src):
            raise ConfigError(f"merchant {merchant.id}: source {name!r} has nothing to pull: give it a [pull] "
                              f"table (kinds {', '.join(sorted(PULLERS))}), a folder, or kind orders_sql")
        chosen.append(src)
    return chosen


def _from_api(cfg: Config, merchant: MerchantConfig, src: SourceConfig, day: date) -> Outcome:
    try:
        path = pull(cfg, merchant, src, day)
    except NotAvailable as exc:
        return Outcome(src.name, "not_available", str(exc))
    except FileRejected as exc:
        completeness.record_rejection(cfg.database.url, merchant, src.name, day, f"pull:{src.name}/{day}",
                                      exc.sha256, str(exc))
        return Outcome(src.name, "rejected", str(exc))
    except (PullError, ConfigError) as exc:
        return Outcome(src.name, "failed", str(exc))
    except Exception as exc:  # a surprise in one source must not stop the others; said without secrets
        secrets = PullContext(src, merchant, cfg.base_dir).secrets
        message = redact(f"{src.name}: unexpected {exc.__class__.__name__}: {exc}", secrets)
        log.error("%s", message)
        return Outcome(src.name, "failed", message)
    return _ingest(cfg, merchant, path, day, src.name)


def _from_database(cfg: Config, merchant: MerchantConfig, src: SourceConfig, day: date) -> Outcome:
    try:
        r = ingest_sql(cfg, merchant, src, day)
    except ParseError as exc:
        return Outcome(src.name, "rejected", str(exc))
    except IngestError as exc:
        return Outcome(src.name, "failed", str(exc))
    return _result(r)


def _ingest(cfg: Config, merchant: MerchantConfig, path: Path, day: date | None, source: str | None) -> Outcome:
    try:
        r = ingest_file(cfg, merchant, path, day, source=source)
    except ParseError as exc:
        # remembered (also when no source claims it), so a drop folder does not retry it every scan
        with open(path, "rb") as fh:
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
        completeness.record_rejection(cfg.database.url, merchant, source, day, str(path.resolve()), sha, str(exc))
        return Outcome(source or "?", "rejected", str(exc), display_path(path))
    except IngestError as exc:
        return Outcome(source or "?", "failed", str(exc), display_path(path))
    return _result(r)


def _result(r) -> Outcome:
    status = "already_ingested" if r.already_ingested else "ingested"
    detail = (f"{r.format} ({r.business_day or '—'}): "
              + ("already ingested" if r.already_ingested else f"{r.rows} rows, {r.new_rows} new"))
    return Outcome(r.source, status, detail, r.path, r.rows, r.new_rows)


def scan_folder(cfg: Config, merchant: MerchantConfig, folder: Path, settle_seconds: float,
                now: float | None = None) -> list[Outcome]:
    """Ingest the complete files of a drop folder that are neither stored nor rejected yet."""
    url = cfg.database.url
    ready, _waiting = complete_files(folder, settle_seconds, now)
    out = []
    for c in ready:
        if store.find_file(url, merchant.id, c.sha256) is not None or completeness.is_rejected(url, merchant.id, c.sha256):
            continue
        out.append(_ingest(cfg, merchant, c.path, None, None))
    return out
