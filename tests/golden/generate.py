"""Write (or, with --check, compare) the golden output of every real sample statement.

    python -m tests.golden.generate [--check]

For each sample a source identifies, this writes `<folder>/<sample name>.expected.jsonl`
beside this file: a header object (business_day, control_totals, format, rows), then one
object per normalised record. If the source rejects the sample, it writes
`<folder>/<sample name>.expected-error.txt` instead: the error message, with the sample
path relative to the samples root so the file is the same on every machine.

Golden files are checked by hand against the samples. After regenerating, read
`git diff tests/golden` and confirm every change against the sample text.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

from core.config import from_dict
from core.sources import REGISTRY, InputFile, ParseError
from core.sources.base import RECORD_FIELDS

GOLDEN = Path(__file__).resolve().parent
FOLDERS = ("wechatpay", "alipay", "unionpay", "mt940", "camt053", "ofx", "stripe", "paypal", "adyen")
SUFFIXES = (".expected.jsonl", ".expected-error.txt")

# Per-kind settings: each statement read in its own zone (Stripe reports run in UTC by default;
# PayPal's report day is Pacific time; Adyen's batches are Amsterdam's).
SETTINGS = {
    "stripe": {"timezone": "UTC", "columns": {"payment_metadata[external_identifier]": "order_id"}},
    "paypal_stl": {"timezone": "America/Los_Angeles"},
    "paypal_trr": {"timezone": "America/Los_Angeles"},
    "paypal_activity": {"timezone": "America/Los_Angeles"},
    "adyen": {"timezone": "Europe/Amsterdam"},
    "mt940": {"timezone": "Europe/Amsterdam"},
    "camt": {"timezone": "Europe/Amsterdam"},
    "ofx": {"timezone": "America/New_York"},
}
# Every source a merchant can configure, so identify() competes the way ingest does.
MERCHANT = from_dict({"merchants": [{
    "id": "golden", "name": "Golden samples", "timezone": "Asia/Shanghai",
    "sources": [{"name": kind, "kind": kind, **SETTINGS.get(kind, {})} for kind in REGISTRY],
}]}).merchants[0]
SOURCES = {s.name: REGISTRY[s.kind](s, MERCHANT) for s in MERCHANT.sources}


def samples_root() -> Path:
    """$RECON_SAMPLES, else ../shared/samples beside the repository (it may not exist)."""
    env = os.environ.get("RECON_SAMPLES")
    return Path(env) if env else GOLDEN.parents[2] / "shared" / "samples"


def sample_files(root: Path) -> list[str]:
    """Every sample in FOLDERS, as 'folder/name'."""
    return sorted(f"{d}/{p.name}" for d in FOLDERS for p in (root / d).iterdir() if p.is_file())


def golden_files() -> list[Path]:
    return sorted(p for d in FOLDERS for p in (GOLDEN / d).glob("*") if p.name.endswith(SUFFIXES))


def claimants(root: Path, rel: str) -> list[str]:
    """Names of the sources whose identify() accepts the sample."""
    file = InputFile.read(root / rel)
    return [name for name, source in SOURCES.items() if source.identify(file)]


def _json(obj) -> str:
    # datetime is a date subclass: both become ISO strings (occurred_at is naive UTC).
    default = lambda v: v.isoformat() if isinstance(v, date) else repr(v)  # noqa: E731
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=default) + "\n"


def render(root: Path, rel: str) -> tuple[str, str] | None:
    """(golden suffix, expected text) for a sample, or None when no source identifies it."""
    file = InputFile.read(root / rel)
    claims = [name for name, source in SOURCES.items() if source.identify(file)]
    if not claims:
        return None
    if len(claims) > 1:
        raise ValueError(f"{rel} is identified by {claims}: identification must be exclusive")
    try:
        parsed = SOURCES[claims[0]].parse(file)
    except ParseError as exc:
        return SUFFIXES[1], str(exc).removeprefix(f"{root}{os.sep}") + "\n"
    # Select by name so a missing field fails here and an extra one is not silently kept.
    records = parsed.records.select(RECORD_FIELDS.names).to_pylist()
    header = {"business_day": parsed.business_day, "control_totals": parsed.control_totals,
              "format": parsed.format, "rows": parsed.row_count}
    return SUFFIXES[0], "".join(_json(obj) for obj in [header, *records])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.golden.generate", description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if any golden file is out of date")
    args = ap.parse_args(argv)
    root = samples_root()
    if not root.is_dir():
        print(f"no samples at {root} (set RECON_SAMPLES)", file=sys.stderr)
        return 2

    wanted: dict[Path, str] = {}
    for rel in sample_files(root):
        out = render(root, rel)
        if out is None:
            print(f"unclaimed  {rel}")
        else:
            wanted[GOLDEN / (rel + out[0])] = out[1]

    stale = 0
    for path in golden_files():
        if path not in wanted:  # sample gone, no longer identified, or now the other outcome
            stale += 1
            print(f"{'stale' if args.check else 'removed'}  {path.relative_to(GOLDEN)}")
            if not args.check:
                path.unlink()
    for path, text in sorted(wanted.items()):
        current = path.read_bytes().decode("utf-8") if path.exists() else None
        if current == text:
            continue
        stale += 1
        print(f"{'new' if current is None else 'changed'}  {path.relative_to(GOLDEN)}")
        if not args.check:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(text.encode("utf-8"))  # bytes: LF line ends on every OS
    if args.check and stale:
        print(f"{stale} golden file(s) out of date: run python -m tests.golden.generate and review the diff",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
