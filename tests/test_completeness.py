"""Late statements: a `late` break per source and day once the deadline has passed, muting
that source's per-order breaks of the day (kept, status unchanged, severity `muted`) until
the statement arrives; rejected statements count as not arrived and say why."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from conftest import EXAMPLES, demo_config
from core.breaks import list_breaks
from core.completeness import due
from core.config import from_dict
from core.ingest import ingest_file
from core.runs import run_day
from core.sources import ParseError

D1, D2 = date(2026, 11, 20), date(2026, 11, 21)
WX_D1 = EXAMPLES / "wechatpay_tradebill_ALL_2026-11-20.csv"
BEFORE = datetime(2026, 11, 21, 1, 59, tzinfo=timezone.utc)  # 09:59 Beijing on D1 + 1
AFTER = datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc)  # 10:00 Beijing: due


def _late_cfg(db_url, **orders):
    return demo_config(db_url, wechatpay={"expected_by": "10:00"}, alipay={"expected_by": "10:00"}, orders=orders)


def _ingest(cfg, *names):
    for name in names:
        ingest_file(cfg, cfg.merchants[0], EXAMPLES / name)


EVERYTHING_BUT_WECHAT_D1 = ("orders_2026-11-20.csv", "orders_2026-11-21.csv", "20881234567890120156_20261120.csv.zip",
                            "20881234567890120156_20261121.csv.zip", "wechatpay_tradebill_ALL_2026-11-21.csv.gz")


def _by_source(url, day=D1):
    out: dict[str, list[dict]] = {}
    for b in list_breaks(url, day=day):
        out.setdefault(b["source"], []).append(b)
    return out


def test_due_is_local_time_on_the_lag_day():
    cfg = from_dict({"merchants": [{"id": "m", "name": "m", "sources": [
        {"name": "w", "kind": "wechatpay", "timezone": "Asia/Shanghai", "expected_by": "10:00"},
        {"name": "s", "kind": "mt940", "timezone": "Europe/Berlin", "expected_by": "07:30", "expected_lag_days": 2},
        {"name": "o", "kind": "orders"}]}]})
    w, s, o = cfg.merchants[0].sources
    assert due(w, D1).astimezone(timezone.utc) == AFTER
    assert due(s, D1).astimezone(timezone.utc) == datetime(2026, 11, 22, 6, 30, tzinfo=timezone.utc)
    assert due(o, D1) is None  # no expected_by: never reported late


def test_missing_statement_is_late_after_its_deadline_and_mutes_that_source_only(db_url):
    cfg = _late_cfg(db_url)
    m = cfg.merchants[0]
    _ingest(cfg, *EVERYTHING_BUT_WECHAT_D1)

    run_day(cfg, m, D1, now=BEFORE)
    before = _by_source(cfg.database.url)
    assert not [b for bs in before.values() for b in bs if b["type"] == "late"]
    assert {b["severity"] for b in before["wechatpay"]} != {"muted"}  # not late yet: WeChat shorts alert

    summary = run_day(cfg, m, D1, now=AFTER)
    after = _by_source(cfg.database.url)
    [late] = [b for b in after["wechatpay"] if b["type"] == "late"]
    assert (late["status"], late["severity"], late["difference"], late["evidence"]) == ("open", "normal", "0.00", [])
    assert late["explanation"] == ("The wechatpay statement for 2026-11-20 has not arrived; it was due by "
                                   "2026-11-21 10:00 Asia/Shanghai. The day's other breaks of that source are muted "
                                   "until it arrives.")
    others = [b for b in after["wechatpay"] if b["type"] != "late"]
    assert others and all(b["severity"] == "muted" and b["status"] in ("open", "in_transit", "note") for b in others)
    assert {(b["order_id"], b["type"]) for b in others} == {(b["order_id"], b["type"]) for b in before["wechatpay"]}
    assert all("Muted while the wechatpay statement for this day is late" in b["explanation"] for b in others)
    assert all(b["severity"] != "muted" for b in after["alipay"])  # Alipay delivered: its breaks still alert
    wx = next(s for s in summary.sources if s.source == "wechatpay")
    assert wx.breaks["late"] == 1 and wx.muted == len(others)

    _ingest(cfg, "wechatpay_tradebill_ALL_2026-11-20.csv")  # the statement arrives
    run_day(cfg, m, D1, now=AFTER)
    arrived = _by_source(cfg.database.url)
    assert not [b for b in arrived["wechatpay"] if b["type"] == "late"]
    assert all(b["severity"] != "muted" and "Muted" not in b["explanation"] for b in arrived["wechatpay"])
    [cleared] = [b for b in list_breaks(cfg.database.url, day=D1, statuses=("cleared",)) if b["type"] == "late"]
    assert cleared["source"] == "wechatpay"


def test_muted_findings_get_no_automatic_adjustment(tmp_path):
    from sqlmodel import Session, select

    from models.db import get_engine, upgrade
    from models.tables import Adjustment, Break

    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    cfg = _late_cfg(url)
    _ingest(cfg, *EVERYTHING_BUT_WECHAT_D1, "wechatpay_tradebill_ALL_2026-11-20.csv")
    run_day(cfg, cfg.merchants[0], D1, now=AFTER)
    with Session(get_engine(url)) as s:
        adjusted = {b.source for b in s.exec(select(Break).join(Adjustment, Adjustment.break_id == Break.id))}
    assert "wechatpay" in adjusted  # small WeChat differences are proposed for adjustment normally ...

    url2 = f"sqlite:///{tmp_path / 'r2.db'}"
    upgrade(url2)
    cfg2 = _late_cfg(url2)
    _ingest(cfg2, *EVERYTHING_BUT_WECHAT_D1)
    ingest_file(cfg2, cfg2.merchants[0], EXAMPLES / "wechatpay_tradebill_ALL_2026-11-20.csv", day=D2)  # filed under D2
    run_day(cfg2, cfg2.merchants[0], D1, now=AFTER)
    with Session(get_engine(url2)) as s:
        adjusted = {b.source for b in s.exec(select(Break).join(Adjustment, Adjustment.break_id == Break.id))}
    assert "wechatpay" not in adjusted  # ... but not while the day's statement is late


def test_late_orders_mute_every_channel(tmp_path):
    from models.db import upgrade

    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    cfg = demo_config(url, orders={"expected_by": "23:00", "expected_lag_days": 0})
    _ingest(cfg, "orders_2026-11-21.csv", "20881234567890120156_20261120.csv.zip",
            "wechatpay_tradebill_ALL_2026-11-20.csv", "wechatpay_tradebill_ALL_2026-11-21.csv.gz")
    run_day(cfg, cfg.merchants[0], D1, now=AFTER)
    breaks = _by_source(url)
    [late] = breaks["orders"]
    assert late["type"] == "late" and late["explanation"].startswith("The orders statement for 2026-11-20 has not arrived")
    channel = [b for s in ("wechatpay", "alipay") for b in breaks.get(s, []) if b["type"] != "duplicate_record"]
    assert channel and all(b["severity"] == "muted" for b in channel)  # a data-quality note stays a note
    assert all("Muted while the orders statement for this day is late" in b["explanation"] for b in channel)
    from bot.cards import break_card

    assert break_card(late).title.endswith("Late statement 账单未到") and break_card(late).severity == "warning"
    assert {break_card(b).severity for b in channel} == {"info"}  # muted: not a warning card


def test_rejected_statement_counts_as_not_arrived_and_the_late_break_says_why(tmp_path):
    from models.db import upgrade

    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    cfg = _late_cfg(url)
    m = cfg.merchants[0]
    _ingest(cfg, *EVERYTHING_BUT_WECHAT_D1)
    broken = tmp_path / "wechatpay_2026-11-20.csv"
    text = WX_D1.read_text(encoding="utf-8-sig")
    broken.write_text(text.replace("`58.00", "`5x.00", 1), encoding="utf-8")
    with pytest.raises(ParseError) as exc:
        ingest_file(cfg, m, broken, day=D1)
    run_day(cfg, m, D1, now=AFTER)
    [late] = [b for b in list_breaks(url, day=D1) if b["type"] == "late"]
    assert late["explanation"].startswith(f"The wechatpay statement for 2026-11-20 was rejected: {exc.value} ")
    assert late["evidence"] == [{"side": "channel", "file": str(broken.resolve()), "line": None}]
    # the same bad file again is remembered once; a good file then clears the late break
    with pytest.raises(ParseError):
        ingest_file(cfg, m, broken, day=D1)
    _ingest(cfg, "wechatpay_tradebill_ALL_2026-11-20.csv")
    run_day(cfg, m, D1, now=AFTER)
    assert not [b for b in list_breaks(url, day=D1) if b["type"] == "late"]


def test_a_later_run_rechecks_the_days_still_waiting_for_a_late_statement(tmp_path):
    from models.db import upgrade

    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    cfg = _late_cfg(url)
    m = cfg.merchants[0]
    _ingest(cfg, *EVERYTHING_BUT_WECHAT_D1)
    run_day(cfg, m, D1, now=AFTER)
    assert [b["source"] for b in list_breaks(url, day=D1) if b["type"] == "late"] == ["wechatpay"]
    _ingest(cfg, "wechatpay_tradebill_ALL_2026-11-20.csv")
    summary = run_day(cfg, m, D2, now=datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc))
    assert D1 in summary.carried_over
    assert not [b for b in list_breaks(url, day=D1) if b["type"] == "late"]
