"""The `recon` command line as a user meets it: real processes, real config files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, REPO, demo_config_toml

RECON = str(Path(sys.executable).parent / "recon")


def recon(*args, cwd=None, env=None):
    return subprocess.run([RECON, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=120)


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "recon.toml"
    path.write_text(demo_config_toml(f"sqlite:///{tmp_path / 'recon.db'}"), encoding="utf-8")
    return path


def test_ingest_run_and_breaks_json_contract(config_file):
    assert recon("db", "upgrade", "--config", config_file).returncode == 0
    files = sorted(EXAMPLES.iterdir())
    r = recon("ingest", *files, "--config", config_file)
    assert r.returncode == 0, r.stderr
    assert "orders_2026-11-20.csv: orders.export -> orders (2026-11-20): 52 rows, 52 new" in r.stdout
    r = recon("run", "--day", "2026-11-20", "--config", config_file)
    assert r.returncode == 0, r.stderr
    assert "15 new, 0 updated, 0 cleared" in r.stdout
    r = recon("breaks", "--format", "json", "--config", config_file)
    rows = json.loads(r.stdout)
    assert len(rows) == 15
    required = {"id", "merchant", "day", "type", "source", "order_id", "txn_id", "internal_amount",
                "channel_amount", "difference", "currency", "status", "evidence"}
    assert all(required <= set(b) for b in rows)
    short = next(b for b in rows if b["order_id"] == "W-1005")
    assert short == {**short, "merchant": "demo-shop", "day": "2026-11-20", "type": "short", "source": "wechatpay",
                     "internal_amount": "32.00", "channel_amount": None, "difference": "-32.00", "currency": "CNY",
                     "status": "open"}
    assert short["evidence"] == [{"side": "internal", "file": str(EXAMPLES / "orders_2026-11-20.csv"), "line": 12}]
    csv_out = recon("breaks", "--format", "csv", "--config", config_file).stdout.splitlines()
    assert csv_out[0].startswith("id,merchant,day,type,source,order_id,txn_id,") and len(csv_out) == 16
    # ingesting again is a no-op, and says so
    again = recon("ingest", *files, "--config", config_file)
    assert again.returncode == 0 and again.stdout.count("already ingested, skipped") == 6
    # bulk I/O (ADBC's SQLite) and the ORM (Python's sqlite3) took turns on one file: still sound
    import sqlite3

    with sqlite3.connect(config_file.parent / "recon.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_bad_file_exits_non_zero_and_names_file_and_line(config_file, tmp_path):
    recon("db", "upgrade", "--config", config_file)
    bad = tmp_path / "orders.csv"
    bad.write_text("order_id,channel,amount,currency,status,paid_at,refund_amount,channel_txn_id\n"
                   "X1,wechatpay,ten,CNY,paid,2026-11-20 10:00:00,0,\n", encoding="utf-8")
    r = recon("ingest", bad, EXAMPLES / "orders_2026-11-21.csv", "--config", config_file)
    assert r.returncode == 1
    assert f"{bad} line 2: amount='ten'" in r.stderr.replace("\n", "")
    assert "orders_2026-11-21.csv: orders.export" in r.stdout  # the good file in the same call still went in


def test_config_errors_name_the_file_and_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[merchants]]\nid = "shop"\nname = "S"\ntimezone = "Mars/Olympus"\n'
                   '[[merchants.sources]]\nname = "wx"\nkind = "wechatpay"\nsettlement_lag = 1\n', encoding="utf-8")
    r = recon("breaks", "--config", cfg)
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert f"{cfg}: merchants[0] (shop).timezone: unknown time zone 'Mars/Olympus'" in err
    assert f"{cfg}: merchants[0] (shop).sources[0] (wx).settlement_lag: unknown key" in err


def test_missing_schema_is_a_clear_error(tmp_path):
    r = recon("breaks", cwd=tmp_path)
    assert r.returncode == 2 and "run `recon db upgrade` first" in r.stderr
    assert not (tmp_path / "reconbot.db").exists()  # asking did not create an empty database


def test_secrets_come_from_the_environment(tmp_path):
    from core.config import ConfigError, load

    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "${RECON_TEST_DB_URL}"\n', encoding="utf-8")
    os.environ["RECON_TEST_DB_URL"] = "postgresql://u:s3cret@db/recon"
    try:
        assert load(cfg).database.url == "postgresql://u:s3cret@db/recon"
    finally:
        del os.environ["RECON_TEST_DB_URL"]
    with pytest.raises(ConfigError, match=r"database.url refers to environment variable RECON_TEST_DB_URL, which is not set"):
        load(cfg)


def test_example_config_is_valid_and_documents_every_key():
    from core.config import Config, load

    cfg = load(REPO / "config.example.toml")
    assert cfg.merchants and cfg.merchants[0].sources
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            if name in ("base_dir", "origin"):
                continue
            yield name
            ann = field.annotation
            inner = getattr(ann, "__args__", (ann,))
            for t in inner:
                if isinstance(t, type) and hasattr(t, "model_fields"):
                    yield from keys(t)

    missing = sorted({k for k in keys(Config) if f"{k} =" not in text and f"[{k}]" not in text
                      and f".{k}]" not in text and f"[[{k}]]" not in text})
    assert missing == []


def test_ingest_without_arguments_takes_the_configured_files(tmp_path):
    cfg = tmp_path / "recon.toml"
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    text = text.replace('url = "sqlite:///reconbot.db"', f'url = "sqlite:///{tmp_path / "r.db"}"')
    text = text.replace('"examples/demo', f'"{EXAMPLES}')
    cfg.write_text(text, encoding="utf-8")
    assert recon("db", "upgrade", "--config", cfg).returncode == 0
    r = recon("ingest", "--config", cfg)
    assert r.returncode == 0, r.stderr
    assert " ".join(r.stdout.split()).count(" new") == 6
