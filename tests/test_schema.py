"""The schema check every `recon` command runs first, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from models import db


def test_head_revision_is_alembics_head():
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    assert db.head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_current_schema_passes(db_url):
    db.check_schema(db_url)  # raises when the migrated database is not at the head


def test_older_revision_is_refused(db_url):
    first_down = "0001"
    db.upgrade(db_url, "head")
    with db.get_engine(db_url).begin() as conn:
        from sqlalchemy import text

        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": first_down})
    with pytest.raises(db.SchemaError, match=f"at schema revision {first_down}, this reconbot needs {db.head_revision()}"):
        db.check_schema(db_url)


def test_unmigrated_database_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    with pytest.raises(db.SchemaError, match="no database file"):
        db.check_schema(url)
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").execute("CREATE TABLE other (x)").connection.commit()
    with pytest.raises(db.SchemaError, match="no reconbot schema yet"):
        db.check_schema(url)


def test_migrations_are_one_linear_chain():
    """Feature branches each added a 0005 on top of 0004; the merged chain must stay linear
    (0005_alerts -> 0006_scheduler -> 0007_record_ranges), or `recon db upgrade` stops at
    "multiple heads"."""
    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    chain = [s.revision for s in ScriptDirectory.from_config(cfg).walk_revisions()]
    assert chain[:4] == ["0007_record_ranges", "0006_scheduler", "0005_alerts", "0004_anomaly"]
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1


def test_the_alert_and_scheduler_tables_go_down_to_0004_and_come_back(db_url):
    """What a database at 0004 (before alerts and the scheduler) goes through."""
    from alembic import command
    from sqlalchemy import inspect

    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.normalise_url(db_url).replace("%", "%%"))
    new = {"outbox", "alert_card", "escalation", "silence", "job_run", "apscheduler_jobs"}
    command.downgrade(cfg, "0004_anomaly")
    db.get_engine(db_url).dispose()
    with db.get_engine(db_url).connect() as conn:
        assert not new & set(inspect(conn).get_table_names())
    db.upgrade(db_url)
    db.get_engine(db_url).dispose()
    with db.get_engine(db_url).connect() as conn:
        assert new <= set(inspect(conn).get_table_names())
    db.check_schema(db_url)


def test_a_new_sqlite_database_gets_large_pages_and_wal(tmp_path):
    """Large pages make bulk inserts a third cheaper; they only take on a new file, before WAL."""
    import sqlite3

    path = tmp_path / "new.db"
    db.upgrade(f"sqlite:///{path}")
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA page_size").fetchone()[0] == db.SQLITE_PAGE_SIZE == 32768
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def _ranges(url: str) -> list[tuple]:
    with db.adbc_connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, first_record_id, last_record_id, first_day, last_day, new_rows FROM statement_file "
                    "ORDER BY id")
        return [tuple(str(v)[:10] if v is not None else None for v in row) for row in cur.fetchall()]


def test_record_ranges_written_at_ingest_are_what_0007_derives_from_the_records(cfg):
    """A statement file's record ids and days, as the writer stores them, and as the
    migration computes them for a database ingested before 0007: the same."""
    from alembic import command
    from datetime import date

    from conftest import EXAMPLES
    from core.ingest import ingest_file
    from core.store import find_ledgers, load_match_records

    url = cfg.database.url
    for path in sorted(EXAMPLES.iterdir()):
        ingest_file(cfg, cfg.merchants[0], path)
    written = _ranges(url)
    ledgers = find_ledgers(url, cfg.merchants[0].id)
    reads = {k: load_match_records(url, i, date(2026, 11, 19), date(2026, 11, 22)).num_rows for k, i in ledgers.items()}
    assert sum(reads.values()) == 124  # every record of the demo days, through the files' ranges
    assert all(r[1] is not None for r in written if r[5] != "0")

    alembic = Config()
    alembic.set_main_option("script_location", str(db.MIGRATIONS))
    alembic.set_main_option("sqlalchemy.url", db.normalise_url(url).replace("%", "%%"))
    command.downgrade(alembic, "0006_scheduler")
    db.get_engine(url).dispose()
    db.upgrade(url)
    db.get_engine(url).dispose()
    assert _ranges(url) == written
    assert {k: load_match_records(url, i, date(2026, 11, 19), date(2026, 11, 22)).num_rows
            for k, i in ledgers.items()} == reads
