"""`recon report`: the demo's reconciled days, summed per source from the run, the breaks,
the adjustments and the records; and the same report as CSV, JSON and an XLSX workbook that
a spreadsheet application opens (LibreOffice converts it, where it is installed)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from conftest import EXAMPLES, demo_config, demo_config_toml, fresh_database
from core.ingest import ingest_file
from core.report import as_json, day_report, trend
from core.runs import run_day

D1, D2 = date(2026, 11, 20), date(2026, 11, 21)
RECON = str(Path(sys.executable).parent / "recon")


def _reconcile(url: str):
    """The demo's two days, ingested and reconciled."""
    cfg = demo_config(url)
    m = cfg.merchants[0]
    for path in sorted(EXAMPLES.iterdir()):
        ingest_file(cfg, m, path)
    run_day(cfg, m, D1)
    run_day(cfg, m, D2)
    return cfg


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def reconciled(request, tmp_path_factory):
    """Built once per module and database (the tests that use it only read)."""
    with fresh_database(request.param, tmp_path_factory.mktemp("report")) as url:
        yield _reconcile(url)


@pytest.fixture(scope="module")
def reconciled_sqlite(tmp_path_factory):
    """For the output formats, which do not depend on the database."""
    with fresh_database("sqlite", tmp_path_factory.mktemp("report")) as url:
        yield _reconcile(url)


def test_the_day_per_source(reconciled):
    rep = day_report(reconciled, "demo-shop", D1)
    assert rep.run_id is not None and [s.source for s in rep.sources] == ["alipay", "wechatpay"]
    ali, wx = rep.sources
    # both sides, matched (from the run's stats)
    assert (ali.internal_payments, ali.internal_amount, ali.channel_payments, ali.channel_amount) == (16, 70750, 18, 76700)
    assert (wx.internal_payments, wx.internal_amount, wx.channel_payments, wx.channel_amount) == (31, 125600, 29, 123400)
    assert (ali.matched, ali.matched_pct, wx.matched, wx.matched_pct) == (16, Decimal("100.0"), 28, Decimal("90.3"))
    # refunds (from the records)
    assert (ali.channel_refunds, ali.channel_refund_amount, ali.internal_refunds, ali.internal_refund_amount) == \
        (2, -4250, 3, -6750)
    # breaks by type, with their signed totals (channel - ours)
    assert {k: (t.count, t.total) for k, t in ali.breaks.items()} == {
        "amount_mismatch": (1, 500), "long": (1, 4250), "short": (1, -2850), "status_mismatch": (2, 6550)}
    assert (wx.breaks["short"].total, wx.breaks["duplicate_charge"].total, wx.breaks["fee_mismatch"].total) == \
        (-3200, 2500, 65)
    # the rate card: WeChat charged ¥0.65 more than 0.6% of the payments, which is exactly
    # the fee_mismatch break the engine found on its own
    assert (wx.fees_charged, wx.fees_rate_card, wx.fee_deviation) == (805, 740, 65)
    assert (ali.fees_charged, ali.fees_rate_card, ali.fee_deviation, ali.fees_returned) == (462, 462, 0, -26)
    # net settled = payments + refunds - their fees, from the records; the payments agree with the run's stats
    for s in rep.sources:
        assert s.net_settled == s.channel_amount + s.channel_refund_amount - s.fees_charged - s.fees_returned
    assert (ali.net_settled, wx.net_settled) == (72014, 115587)
    # automatic adjustments proposed for the small known types (below ¥100)
    assert (wx.auto_adjusted, wx.auto_adjusted_amount, wx.auto_adjusted_booked) == (3, 1265, 0)
    assert (ali.auto_adjusted, ali.auto_adjusted_amount) == (1, 500)
    t = rep.totals
    assert (t.internal_payments, t.matched, t.matched_pct, t.net_settled) == (47, 44, Decimal("93.6"), 187601)
    assert t.breaks["short"].count == 2 and t.fees_rate_card == 1202
    # the break list carries file:line evidence for every break
    assert len(rep.breaks) == ali.break_count + wx.break_count
    assert all(e["file"] and e["line"] for b in rep.breaks if b["type"] not in ("anomaly",) for e in b["evidence"])


def test_in_transit_is_reported_apart(reconciled):
    rep = day_report(reconciled, "demo-shop", D2)
    wx = next(s for s in rep.sources if s.source == "wechatpay")
    assert (wx.in_transit, wx.in_transit_amount, wx.break_count) == (1, 3600, 0)  # may still arrive
    assert [b["status"] for b in rep.breaks] == ["in_transit"]


def test_an_approved_adjustment_counts_as_booked(tmp_path):
    from bot.actions import Click, Workflow
    from chat_setup import people
    from core.breaks import list_breaks

    with fresh_database("sqlite", tmp_path) as url:
        cfg = _reconcile(url)
    alice = people(url)["alice"]
    fx = next(b for b in list_breaks(url, day=D1) if b["type"] == "fx_difference")
    Workflow(cfg).act(alice, Click("approve", fx["id"], fx["version"]))
    wx = next(s for s in day_report(cfg, "demo-shop", D1).sources if s.source == "wechatpay")
    assert wx.auto_adjusted_booked == 200  # the ¥2.00 FX difference, approved
    assert (wx.breaks["fx_difference"].count, wx.breaks["fx_difference"].open) == (1, 0)  # adjusted, still reported


def test_a_day_never_reconciled_has_its_sources_and_nothing_else(cfg):  # an empty database
    rep = day_report(cfg, "demo-shop", D1)
    assert rep.run_id is None and [s.source for s in rep.sources] == ["alipay", "wechatpay"]
    assert all(s.internal_payments == s.channel_amount == s.break_count == 0 for s in rep.sources)
    assert rep.breaks == [] and trend(cfg, "demo-shop", D1).empty


def test_trend_of_the_reconciled_days(reconciled):
    t = trend(reconciled, "demo-shop", D2, days=30)
    assert (t.first, t.last, t.days, t.sources) == (date(2026, 10, 23), D2, [D1, D2], ["alipay", "wechatpay"])
    assert t.matched_pct["wechatpay"] == [Decimal("90.3"), Decimal("83.3")]
    assert t.refund_rate["alipay"] == [Decimal("5.54"), Decimal("0.00")]  # ¥42.50 of ¥767.00 refunded
    assert t.break_amount["alipay"] == [14150, 0]
    assert t.fees == {"alipay": 462 + 97, "wechatpay": 805 + 163}


def test_json_and_csv_carry_the_same_numbers(reconciled_sqlite):
    from bot.report_tables import csv_text

    rep = day_report(reconciled_sqlite, "demo-shop", D1)
    data = json.loads(json.dumps(as_json(rep), ensure_ascii=False))
    wx = data["sources"][1]
    assert wx["fees"] == {"rate": "0.006", "charged": "8.05", "returned": "-0.42", "rate_card": "7.40",
                          "deviation": "0.65"}
    assert wx["net_settled"] == "1155.87" and data["total"]["matched_pct"] == "93.6"
    assert data["run_id"] and data["finished_at"].endswith("+00:00")  # stored UTC, said so
    assert len(data["breaks"]) == 15  # no anomaly model here: the demo's 16th break is its alert

    blocks = [list(csv.reader(io.StringIO(b))) for b in csv_text(rep).split("\n\n")]
    assert [b[0][0] for b in blocks] == ["Sources", "Breaks by type", "Fees", "Breaks", "About"]
    sources = [dict(zip(blocks[0][1], row)) for row in blocks[0][2:]]
    assert [(r["source"], r["net settled"], r["matched %"]) for r in sources] == [
        ("alipay", "720.14", "100.0"), ("wechatpay", "1155.87", "90.3"), ("total", "1876.01", "93.6")]
    breaks = [dict(zip(blocks[3][1], row)) for row in blocks[3][2:]]
    w1010 = next(r for r in breaks if r["order"] == "W-1010")
    assert (w1010["ours"], w1010["channel"], w1010["difference"]) == ("128.00", "118.00", "-10.00")
    assert w1010["evidence (file:line)"] == (f"internal: {EXAMPLES}/orders_2026-11-20.csv:21\nchannel: "
                                                  f"{EXAMPLES}/wechatpay_tradebill_ALL_2026-11-20.csv:11")


def _xlsx(cfg, tmp_path) -> Path:
    from bot.report_xlsx import write_xlsx

    return write_xlsx(day_report(cfg, "demo-shop", D1), tmp_path / "report.xlsx")


def test_xlsx_read_back(reconciled_sqlite, tmp_path):
    from openpyxl import load_workbook

    path = _xlsx(reconciled_sqlite, tmp_path)
    assert not (tmp_path / "report.xlsx.part").exists()
    wb = load_workbook(path)
    assert wb.sheetnames == ["Sources", "Breaks by type", "Fees", "Breaks", "About"]
    for name in wb.sheetnames[:-1]:
        assert wb[name].freeze_panes == "A2", name  # the header row is frozen
        assert all(c.font.b for c in wb[name][1]), name
    src = wb["Sources"]
    header = [c.value for c in src[1]]
    wx = {h: c for h, c in zip(header, src[3])}
    assert wx["source"].value == "wechatpay"
    assert Decimal(str(wx["our amount"].value)) == Decimal("1256.00")  # a number, not text
    assert wx["our amount"].number_format == '"¥"#,##0.00;-"¥"#,##0.00'
    assert Decimal(str(wx["net settled"].value)) == Decimal("1155.87")
    assert wx["matched %"].number_format == "0.0%" and Decimal(str(wx["matched %"].value)) == Decimal("0.903")
    assert wx["our payments"].value == 31 and wx["our payments"].number_format == "#,##0"
    assert src.cell(row=4, column=1).value == "total" and src.cell(row=4, column=1).font.b
    fees = wb["Fees"]
    assert fees["B2"].number_format == "0.00##%" and Decimal(str(fees["B2"].value)) == Decimal("0.006")
    br = wb["Breaks"]
    assert br.max_row == 16 and br.auto_filter.ref == f"A1:M{br.max_row}"
    cols = [c.value for c in br[1]]
    row = next(r for r in br.iter_rows(min_row=2) if r[cols.index("order")].value == "W-1010")
    assert row[cols.index("difference")].value == -10 and row[cols.index("day")].number_format == "yyyy-mm-dd"
    assert row[cols.index("evidence (file:line)")].alignment.wrap_text
    assert "W-1010: ¥128.00 in our books but ¥118.00 at the channel" in row[cols.index("explanation")].value
    about = {r[0].value: r[1].value for r in wb["About"].iter_rows(min_row=2)}
    assert about["merchant"] == "demo-shop" and about["business day"] == "2026-11-20"


def test_libreoffice_converts_the_workbook_without_warnings(reconciled_sqlite, tmp_path):
    office = shutil.which("libreoffice") or shutil.which("soffice")
    if office is None:
        pytest.skip("LibreOffice is not on PATH (apt-get install libreoffice-calc-nogui to run this check); "
                    "the workbook is still checked by reading it back with openpyxl (test_xlsx_read_back)")
    path = _xlsx(reconciled_sqlite, tmp_path)
    out = tmp_path / "pdf"
    # a profile of its own: two test workers must not share LibreOffice's user installation
    r = subprocess.run([office, f"-env:UserInstallation=file://{tmp_path / 'lo-profile'}", "--headless",
                        "--convert-to", "pdf", "--outdir", str(out), str(path)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    pdf = out / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
    # LibreOffice says nothing about the file; the only line allowed is its note that no
    # Java runtime is installed (a property of this machine, not of the workbook)
    noise = [ln for ln in (r.stderr + r.stdout).splitlines()
             if ln.strip() and "javaldx" not in ln and not ln.startswith("convert ")]
    assert noise == []
    if shutil.which("pdftotext"):  # the money formats were applied by the application itself
        text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                              timeout=60).stdout
        assert "¥1,155.87" in text and "90.3%" in text and "-¥10.00" in text


def test_recon_report_command(reconciled_sqlite, tmp_path):
    config = tmp_path / "recon.toml"
    config.write_text(demo_config_toml(reconciled_sqlite.database.url), encoding="utf-8")
    env = {**os.environ, "COLUMNS": "200"}

    def recon(*args):
        r = subprocess.run([RECON, *map(str, args), "--config", str(config)], capture_output=True, text=True,
                           env=env, timeout=120, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        return r

    r = recon("report", "--day", "2026-11-20", "--format", "xlsx", "--chart", tmp_path / "c.png")
    assert r.stdout.splitlines() == ["report written to recon-report-demo-shop-2026-11-20.xlsx",
                                     f"chart written to {tmp_path / 'c.png'}"]
    assert (tmp_path / "recon-report-demo-shop-2026-11-20.xlsx").stat().st_size > 5000
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG")
    table = recon("report", "--day", "2026-11-20").stdout
    assert "matched %" in table and "¥1,155.87" in table and "Breaks (15)" in table
    never = subprocess.run([RECON, "report", "--day", "2026-11-19", "--format", "json", "--config", str(config)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert never.returncode == 0 and "2026-11-19 was never reconciled" in never.stderr
    assert json.loads(never.stdout)["run_id"] is None


DEMO_BREAK_TITLES = ["Short payment 短款", "Long payment 长款", "Amount mismatch 错账", "Status mismatch 状态不符",
                     "Duplicate charge 重复扣款", "Duplicate row 重复记录", "Fee deviation 手续费不符",
                     "FX difference 汇兑差异", "Suggested match 待确认匹配", "Anomaly 异常交易"]


def test_recon_demo_lists_every_break_with_evidence_then_writes_the_report_and_the_chart(tmp_path):
    r = subprocess.run([RECON, "demo", "--output", "out"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"}, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # every break in full before the alert pipeline's cards (which show the small ones only
    # as digest lines): a card per break, with its explanation and file:line evidence
    listing = r.stdout.split("17 breaks to look at", 1)[1].split("what the chats get", 1)[0]
    cards = listing.split("╭─ #")[1:]
    assert len(cards) == 17
    for title in DEMO_BREAK_TITLES:
        assert any(card.split("─")[0].split(" ", 1)[1].startswith(title) for card in cards), title
    with_lines = [c for c in cards if re.search(r"↳ (internal|channel): \S+\.(csv|zip|gz):\d+", c)]
    assert len(with_lines) == 17
    wrote = [line.removeprefix("wrote ") for line in r.stdout.splitlines() if line.startswith("wrote ")]
    assert wrote == ["out/recon-report-demo-shop-2026-11-20.xlsx", "out/recon-report-demo-shop-2026-11-21.xlsx",
                     "out/recon-chart-demo-shop-2026-11-21.png"]
    from openpyxl import load_workbook

    wb = load_workbook(tmp_path / wrote[0])
    assert wb["Breaks"].max_row == 17  # the 16 breaks of the 20th (with the anomaly alert), under the header
    assert (tmp_path / wrote[2]).read_bytes().startswith(b"\x89PNG")
