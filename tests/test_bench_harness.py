"""The benchmarks' own parts: the baselines count what gen_day planted, a step that outgrows
the memory cap is stopped and said so, and the bank statements `make accuracy` writes are
MT940 that the parser reads whole, balanced, with the details as written.

Nothing here is timed (speed belongs in bench/).
"""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import datetime
from decimal import Decimal

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "examples"))

import bank_plants  # noqa: E402
import bench_day  # noqa: E402
import gen_day  # noqa: E402

from core.config import from_dict  # noqa: E402
from core.rules import Rules  # noqa: E402
from core.sources import REGISTRY, InputFile  # noqa: E402


@pytest.fixture
def day_files(tmp_path, monkeypatch):
    monkeypatch.setattr(gen_day, "OUT", tmp_path / "out")
    monkeypatch.setattr(gen_day, "CHUNK", 3_001)  # several chunks, as 10M orders have
    return gen_day.generate(10_000)


@pytest.mark.parametrize("key", ["duckdb", "pandas"])
def test_baseline_counts_what_was_planted(key, day_files, tmp_path):
    _label, script = bench_day.BASELINES[key]
    step = bench_day.run_step(10_000, f"baseline {key}", [sys.executable, str(REPO / "bench" / script),
                                                          str(day_files.orders), str(day_files.bill)],
                              tmp_path, tmp_path, None)
    assert step.ok, step.log.read_text()
    assert bench_day.check_baseline(key, step, day_files) is None


def test_a_baseline_that_counts_wrong_is_caught(day_files, tmp_path):
    log = tmp_path / "pandas.log"
    breaks = dict(day_files.expected_breaks, long=day_files.expected_breaks["long"] - 1)
    log.write_text('{"breaks": %s}\n' % str(breaks).replace("'", '"'))
    step = bench_day.Step(10_000, "baseline pandas", 1.0, 1.0, 1.0, None, 0, log)
    assert "long: expected 5 found 4" in bench_day.check_baseline("pandas", step, day_files)


def test_chunked_bill_keeps_its_control_totals(day_files):
    """The summary row adds up the rows written chunk by chunk: the WeChat parser checks it."""
    merchant = from_dict({"merchants": [{"id": "b", "name": "B", "sources": [
        {"name": "wechatpay", "kind": "wechatpay"}]}]}).merchants[0]
    parsed = REGISTRY["wechatpay"](merchant.sources[0], merchant).parse(InputFile.read(day_files.bill))
    assert parsed.records.num_rows == day_files.bill_rows


def test_a_step_over_the_memory_cap_is_stopped(tmp_path):
    grow = "import time; x = bytearray(400 * 2**20); time.sleep(30)"
    step = bench_day.run_step(1, "hungry", [sys.executable, "-c", grow], tmp_path, tmp_path, None, max_rss=200 * 2**20)
    assert not step.ok
    assert step.stopped_at_mib is not None and step.stopped_at_mib > 200
    assert step.wall_s < 25  # stopped, not waited out
    assert "more memory than this machine had free" in step.failure()


def _bank_day(tmp_path):
    planter = bank_plants.BankPlanter(random.Random("test"), Rules())
    days = [datetime(2026, 11, 10), datetime(2026, 11, 11), datetime(2026, 11, 12)]
    for k, day in enumerate(days[:-1]):
        planter.plant_day(day, k)
    return planter, planter.write_statements(tmp_path, days)


def test_bank_statements_parse_whole_with_the_details_as_written(tmp_path):
    planter, paths = _bank_day(tmp_path)
    merchant = from_dict({"merchants": [{"id": "b", "name": "B", "sources": [
        {"name": "bank", "kind": "mt940", "timezone": "Asia/Shanghai"}]}]}).merchants[0]
    source = REGISTRY["mt940"](merchant.sources[0], merchant)
    rows = []
    for path in paths:
        parsed = source.parse(InputFile.read(path))  # control totals: opening + lines = closing
        rows += parsed.records.to_pylist()
    by_ref = {r["txn_id"]: r for r in rows}
    assert len(rows) == len(planter.entries)
    for e in planter.entries:
        r = by_ref[e.ref]
        assert (r["amount"], r["business_day"], r["line"]) == (int(e.amount * 100), e.booked, e.line)
        assert r["payer"] == e.name and r["memo"] == f"/NAME/{e.name}/REMI/{e.remittance}"  # unwrapped exactly
        assert r["order_id"] is None  # NONREF: the fuzzy pass has only the details
        assert r["kind"] == ("payment" if e.amount > 0 else "payout")
    wrapped = [e for e in planter.entries if len(f"/NAME/{e.name}/REMI/{e.remittance}") > 65]
    assert wrapped  # some details span two :86: lines, as a bank wraps them


def test_bank_plants_expect_what_the_rules_score(tmp_path):
    """With the default weights a payer-only line cannot reach the threshold: suggested; a
    line naming the order is confirmed; a lower threshold confirms payer-only lines too."""
    planter, _paths = _bank_day(tmp_path)
    by_case = {}
    for inst in planter.instances:
        for x in inst.fuzzy:
            by_case.setdefault(inst.case, set()).add(x.status)
    assert by_case == {"memo_id": {"confirmed"}, "payer_only": {"suggested"}, "same_amount": {"suggested"},
                       "id_prefix": {"confirmed"}}
    lenient = bank_plants.BankPlanter(random.Random("test"), Rules(fuzzy_min_score=Decimal("0.4")))
    lenient.plant_day(datetime(2026, 11, 10), 0)
    assert {x.status for i in lenient.instances if i.case == "payer_only" for x in i.fuzzy} == {"confirmed"}
    assert {x.status for i in lenient.instances if i.case == "same_amount" for x in i.fuzzy} == {"suggested"}


def test_accuracy_script_runs(tmp_path):
    """`make accuracy` end to end on a small day: it must run through and print every table
    (whether the engine passes is what the bench reports, not what this test decides)."""
    r = subprocess.run([sys.executable, str(REPO / "bench" / "accuracy.py"), "--days", "2", "--orders", "40"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    out = " ".join(r.stdout.split())  # table titles wrap
    for shown in ("accuracy:", "fuzzy pass, by pair", "bank transfers (MT940 statements), by case", "memo_id",
                  "same_amount", "debits", "auto-adjustments:"):
        assert shown in out, r.stdout[-3000:]
    assert ("PASS" in out) == (r.returncode == 0)
