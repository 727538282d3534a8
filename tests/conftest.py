"""Shared fixtures: real sample files in place, and a fresh database on SQLite or PostgreSQL.

PostgreSQL: RECON_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test). Each
test gets its own schema, so parallel workers never see each other's rows. Where the
server is not reachable, the PostgreSQL variants skip and say why.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "demo"
PG_URL = os.environ.get("RECON_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def samples_root() -> Path:
    return Path(os.environ.get("RECON_SAMPLES", REPO.parent / "shared" / "samples"))


@pytest.fixture
def samples() -> Path:
    root = samples_root()
    if not root.is_dir():
        pytest.skip(f"real sample statements not found at {root} (set RECON_SAMPLES or check out ../shared)")
    return root


_pg_problem: str | None = None
_pg_checked = False


def pg_unreachable() -> str | None:
    """None when PostgreSQL answers, else the reason (asked once per worker)."""
    global _pg_problem, _pg_checked
    if not _pg_checked:
        _pg_checked = True
        try:
            import psycopg

            with psycopg.connect(PG_URL, connect_timeout=3):
                pass
        except Exception as exc:  # any failure to connect means: skip, saying why
            _pg_problem = f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}: {str(exc).strip()[:200]}"
    return _pg_problem


@contextlib.contextmanager
def fresh_database(kind: str, folder: Path):
    """A migrated, empty reconbot database: a SQLite file in `folder`, or a private
    PostgreSQL schema (dropped afterwards). Skips, saying why, where PostgreSQL is not reachable."""
    from models.db import upgrade

    if kind == "sqlite":
        url = f"sqlite:///{folder / 'recon.db'}"
        upgrade(url)
        yield url
        return
    problem = pg_unreachable()
    if problem:
        pytest.skip(problem)
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        from models.db import get_engine

        get_engine(url).dispose()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """A migrated, empty reconbot database (SQLite file or a private PostgreSQL schema)."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


def demo_config(db_url: str, **source_overrides):
    """The demo merchant on the given database."""
    from core.config import from_dict

    sources = [
        {"name": "orders", "kind": "orders"},
        {"name": "wechatpay", "kind": "wechatpay", "settlement_lag_days": 1, "fee_rate": "0.006"},
        {"name": "alipay", "kind": "alipay", "settlement_lag_days": 1, "fee_rate": "0.006"},
    ]
    for s in sources:
        s.update(source_overrides.get(s["name"], {}))
    return from_dict({
        "database": {"url": db_url},
        "fx": {"rates": {"USD/CNY": "7.10"}},
        "merchants": [{"id": "demo-shop", "name": "Demo", "timezone": "Asia/Shanghai", "currency": "CNY",
                       "sources": sources}],
    })


def write_zip_bomb(path: Path, member: str, size: int = 50 * 1024 * 1024, fill: bytes = b" ") -> Path:
    """A zip whose one member inflates to `size` bytes from a few kB (InputFile must refuse it)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, fill * size)
    path.write_bytes(buf.getvalue())
    return path


def demo_config_toml(db_url: str) -> str:
    """The demo merchant as a config file's text (for tests that run `recon` as a process);
    the same rules as `demo_config`. Callers append their own sections."""
    return f"""
[database]
url = "{db_url}"

[fx]
rates = {{ "USD/CNY" = "7.10" }}

[[merchants]]
id = "demo-shop"
name = "Demo"
[[merchants.sources]]
name = "orders"
kind = "orders"
[[merchants.sources]]
name = "wechatpay"
kind = "wechatpay"
fee_rate = "0.006"
[[merchants.sources]]
name = "alipay"
kind = "alipay"
fee_rate = "0.006"
"""


@pytest.fixture
def cfg(db_url):
    return demo_config(db_url)


def table_counts(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from models.db import get_engine

    tables = ["merchant", "ledger", "statement_file", "record", "recon_run", "break", "adjustment", "audit_event"]
    with get_engine(url).connect() as conn:
        return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}


# -- the chat platforms' fakes (tests/chat_fakes.py), one local server each per test ---------------
# A module that needs a variant (Socket Mode, a leftover webhook) defines its own fixture of the name.

@pytest.fixture
def slack():
    from chat_fakes import FakeSlack

    fake = FakeSlack()
    yield fake
    fake.close()


@pytest.fixture
def tg():
    from chat_fakes import FakeTelegram
    from chat_setup import TG_TOKEN

    fake = FakeTelegram(TG_TOKEN)
    yield fake
    fake.close()


@pytest.fixture
def wecom():
    from chat_fakes import FakeWecom

    fake = FakeWecom()
    yield fake
    fake.close()
