"""Golden tests: every real sample statement parses to exactly its hand-checked output (or its hand-checked error).

The samples are real files kept outside the repository (../shared/samples, or
$RECON_SAMPLES). Without them these tests skip. When a parser change is intended, run
`python -m tests.golden.generate`, then check `git diff tests/golden` against the samples.
"""

from __future__ import annotations

import difflib
import json

import pytest

# pytest puts tests/ on sys.path (tests/ has no __init__.py), so the package is `golden` here.
from golden import generate as g

ROOT = g.samples_root()
MISSING = f"sample files not found at {ROOT} (set RECON_SAMPLES to their folder)"

# Samples that no source identifies, each with the reason. A new sample must either be
# claimed by a source (and get a golden file) or be listed here.
UNCLAIMED = {
    "wechatpay/SOURCES.md": "provenance notes, not a statement",
    "wechatpay/wxjava_billresult_test_excerpts.txt": "three masked bills pasted into one file under '## ' "
    "headings (a test-code excerpt, not a bill): ingest refuses it as unrecognised",
    "alipay/SOURCES.md": "provenance notes, not a statement",
    "unionpay/SOURCES.md": "provenance notes, not a statement",
    "unionpay/RD201015090501_802310048993424": "the zip's GBK summary report (汇总表): read inside the zip to check "
    "the flow file's totals; alone it holds no transactions",
    "mt940/SOURCES.md": "provenance notes, not a statement",
    "camt053/SOURCES.md": "provenance notes, not a statement",
    "ofx/SOURCES.md": "provenance notes, not a statement",
    "mt940/betterplace_LICENSE": "licence text of the betterplace samples",
    "mt940/cmxl_LICENSE": "licence text of the cmxl samples",
    "mt940/jejik_LICENSE": "licence text of the jejik samples",
    "mt940/self-provided_invalid_statement.sta": "the lines 1 to 10 and nothing else: no MT940 tag, so no source "
    "recognises it and ingest refuses it as unrecognised",
    "stripe/SOURCES.md": "provenance notes, not a statement",
    "paypal/SOURCES.md": "provenance notes, not a statement",
    "paypal/smashpig_sar_classic_subscr_cancel.csv": "Subscription Agreement Report (SAR): subscription sign-ups "
    "and cancellations, no money moves, so not a statement to reconcile",
    "paypal/smashpig_sar_classic_subscr_signup.csv": "Subscription Agreement Report (SAR): subscription sign-ups "
    "and cancellations, no money moves, so not a statement to reconcile",
    "adyen/SOURCES.md": "provenance notes, not a statement",
}

# Without the samples, one skipped case that says why (an empty list would skip vaguely).
SAMPLES = g.sample_files(ROOT) if ROOT.is_dir() else [pytest.param("-", marks=pytest.mark.skip(reason=MISSING))]


def _golden(rel: str) -> list:
    return [g.GOLDEN / (rel + s) for s in g.SUFFIXES if (g.GOLDEN / (rel + s)).exists()]


@pytest.mark.parametrize("rel", SAMPLES)
def test_identification_is_exclusive(rel):
    claims = g.claimants(ROOT, rel)
    if rel in UNCLAIMED:
        assert claims == [], f"{rel} is in UNCLAIMED ({UNCLAIMED[rel]}) but {claims} identify it"
    else:
        assert claims, f"no source identifies {rel}: list it in UNCLAIMED with a reason"
        assert len(claims) == 1, f"{rel} is identified by {claims}: exactly one source may claim a file"


@pytest.mark.parametrize("rel", SAMPLES)
def test_golden(rel):
    golden = _golden(rel)
    names = [p.name for p in golden]
    if not g.claimants(ROOT, rel):
        assert not golden, f"no source identifies {rel} any more, but it has golden file(s) {names}"
        return
    assert golden, f"{rel} is identified but has no golden file: run python -m tests.golden.generate and check it"
    assert len(golden) == 1, f"{rel} has both golden outcomes {names}: delete the wrong one"
    expected = golden[0].read_bytes().decode("utf-8")
    suffix, actual = g.render(ROOT, rel)
    if actual != expected:
        outcome = "records" if suffix == g.SUFFIXES[0] else "error"
        diff = difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True),
                                    fromfile=f"tests/golden/{golden[0].relative_to(g.GOLDEN)}",
                                    tofile=f"parser output ({outcome})", n=1)
        pytest.fail("parser output differs from the golden file:\n" + _field_changes(expected, actual)
                    + "".join(diff), pytrace=False)


def _field_changes(expected: str, actual: str) -> str:
    """'line 21: fee 2 -> 1' per changed field: records are long lines, hard to compare by eye."""
    try:
        pairs = zip(map(json.loads, expected.splitlines()), map(json.loads, actual.splitlines()))
        out = [f"{'line ' + str(old['line']) if 'line' in old else 'header'}: {k} {old.get(k)!r} -> {new.get(k)!r}"
               for old, new in pairs for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)]
    except json.JSONDecodeError:  # an error message on one side: the diff says it all
        return ""
    return "".join(f"  {line}\n" for line in out[:20])


@pytest.mark.skipif(not ROOT.is_dir(), reason=MISSING)
def test_no_orphans():
    """Golden files and UNCLAIMED entries must name samples that still exist."""
    allowed = {rel + s for rel in SAMPLES for s in g.SUFFIXES}
    orphans = [name for p in g.golden_files() if (name := p.relative_to(g.GOLDEN).as_posix()) not in allowed]
    assert not orphans, f"golden files without a sample: {orphans}"
    gone = sorted(set(UNCLAIMED) - set(SAMPLES))
    assert not gone, f"UNCLAIMED lists samples that no longer exist: {gone}"
