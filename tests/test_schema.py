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
