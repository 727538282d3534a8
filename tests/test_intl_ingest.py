"""Stripe, PayPal and Adyen statements go through ingest into SQLite and PostgreSQL, idempotently."""

from __future__ import annotations

import pytest

from conftest import table_counts
from core.config import from_dict
from core.ingest import ingest_file
from core.sources import ControlTotalError

SAMPLES = {
    "stripe/smashpig_settlement_report_with_customer_data.csv": ("stripe", "stripe.balance_itemized", 3, "2026-01-30"),
    "paypal/smashpig_stl_brl_refund.csv": ("paypal_stl", "paypal.settlement", 3, "2025-12-23"),
    "paypal/smashpig_trr_void.csv": ("paypal_trr", "paypal.transaction_detail", 2, "2026-01-25"),
    "paypal/oca_activity_en.csv": ("paypal_activity", "paypal.activity_csv", 76, "2016-11-01"),
    "paypal/oca_empty_activity.csv": ("paypal_activity", "paypal.activity_csv", 0, "None"),
    "adyen/oca_settlement_detail_report_batch_380.csv": ("adyen", "adyen.settlement_detail", 228, "2021-01-05"),
}


@pytest.fixture
def intl_cfg(db_url):
    tz = {"stripe": "UTC", "adyen": "Europe/Amsterdam"}
    kinds = ("stripe", "paypal_stl", "paypal_trr", "paypal_activity", "adyen")
    return from_dict({
        "database": {"url": db_url},
        "merchants": [{"id": "intl", "name": "Intl", "timezone": "Europe/Amsterdam", "currency": "EUR",
                       "sources": [{"name": k, "kind": k, "timezone": tz.get(k, "America/Los_Angeles")}
                                   for k in ("orders", *kinds)]}],
    })


def test_samples_ingest_once_with_their_source_format_and_day(intl_cfg, samples):
    m = intl_cfg.merchants[0]
    got = {}
    for rel in SAMPLES:
        r = ingest_file(intl_cfg, m, samples / rel)
        got[rel] = (r.source, r.format, r.new_rows, str(r.business_day))
    assert got == SAMPLES
    before = table_counts(intl_cfg.database.url)
    assert before["record"] == sum(v[2] for v in SAMPLES.values())
    again = [ingest_file(intl_cfg, m, samples / rel) for rel in SAMPLES]
    assert all(r.already_ingested for r in again)
    assert table_counts(intl_cfg.database.url) == before


def test_a_rejected_sample_leaves_nothing_behind(intl_cfg, samples):
    before = table_counts(intl_cfg.database.url)
    with pytest.raises(ControlTotalError, match="SF says 20039 body rows in its section"):
        ingest_file(intl_cfg, intl_cfg.merchants[0], samples / "paypal/smashpig_trr_express_with_non_data_rows.csv")
    assert table_counts(intl_cfg.database.url) == before
