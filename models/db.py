"""Database access: one SQLAlchemy engine for ORM work, ADBC connections for bulk rows.

SQLite is the embedded default; PostgreSQL is used in production. Both go through the
same code: only the URL differs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.pool import NullPool
from sqlalchemy.engine import Engine, make_url

MIGRATIONS = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever spelling the operator wrote."""
    u = make_url(url)
    if u.get_backend_name() == "postgresql" and u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_path(url: str) -> str:
    """The file a SQLite URL names (":memory:" for none)."""
    return make_url(normalise_url(url)).database or ":memory:"


_pooled_sqlite = False

# Pages of 32 KiB instead of SQLite's 4 KiB: a bulk insert of a million records costs about
# a third less CPU (fewer pages to split, log and checksum: 3.9-4.4 s -> 2.7-2.9 s measured
# for 1M rows with the record indexes), which is most of an ingest's critical path. A
# one-row commit then logs 32 KiB pages instead of 4 KiB ones: still well under a
# millisecond. It applies when a database file is created; an existing one keeps its size.
SQLITE_PAGE_SIZE = 32768


def _sqlite_pragmas(dbapi_conn) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")  # before WAL: a new file takes it
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def pool_sqlite_connections() -> None:
    """Keep SQLite connections open in a pool, for a process that never does bulk I/O.

    `recon serve` answers many small requests; opening and closing a SQLite connection per
    transaction costs ~20 ms here (the last close checkpoints the WAL). Pooling is only safe
    without ADBC in the same process (see `get_engine`), so `adbc_connect` refuses from now on.
    """
    global _pooled_sqlite
    _pooled_sqlite = True
    get_engine.cache_clear()


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    url = normalise_url(url)
    if is_sqlite(url) and _pooled_sqlite:
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False},
                               pool_size=8, max_overflow=56)

        event.listen(engine, "connect", lambda dbapi_conn, _record: _sqlite_pragmas(dbapi_conn))
        return engine
    if is_sqlite(url):
        # NullPool: every connection is closed when its block ends. The ADBC driver links
        # its own copy of SQLite, and two SQLite copies in one process must never hold the
        # same file open at once (POSIX locks are per process: closing one copy's handle
        # drops the other's locks, which corrupts the database). So: ORM work and bulk
        # I/O take turns, each opening and closing its own connection.
        engine = create_engine(url, connect_args={"timeout": 60}, poolclass=NullPool)

        event.listen(engine, "connect", lambda dbapi_conn, _record: _sqlite_pragmas(dbapi_conn))
        return engine
    return create_engine(url, pool_pre_ping=True)


def adbc_connect(url: str):
    """An ADBC DB-API connection to the same database, for Arrow bulk reads and writes.

    Close it before any ORM work on the same SQLite file (see `get_engine`).
    """
    u = make_url(normalise_url(url))
    if u.get_backend_name() == "sqlite":
        if _pooled_sqlite:
            raise RuntimeError("bulk I/O in a process that pools SQLite connections would corrupt the database "
                               "(see models.db.get_engine); run it in its own process")
        import adbc_driver_sqlite.dbapi as adbc_sqlite

        conn = adbc_sqlite.connect(sqlite_path(url))
        # Wait for a lock as the ORM's connections do (timeout 60) instead of failing at
        # once: two bulk readers opening a WAL database together, or a reader meeting the
        # last connection's checkpoint, briefly contend for it.
        with conn.cursor() as cur:
            cur.execute("PRAGMA busy_timeout = 60000")
            cur.fetchall()
        return conn
    if u.get_backend_name() == "postgresql":
        import adbc_driver_postgresql.dbapi as adbc_pg

        libpq = u.set(drivername="postgresql").render_as_string(hide_password=False)
        return adbc_pg.connect(libpq)
    raise ValueError(f"unsupported database for bulk I/O: {u.get_backend_name()}")


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` with Alembic (what `recon db upgrade` runs)."""
    from alembic import command
    from alembic.config import Config

    if is_sqlite(url):  # a new file gets its page size and WAL before Alembic's engine creates tables
        with get_engine(url).connect():
            pass
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    command.upgrade(cfg, revision)


class SchemaError(Exception):
    pass


def head_revision() -> str:
    """The newest migration's revision id, read from the migration files themselves.

    Alembic's ScriptDirectory answers the same (a test checks they agree) but imports
    alembic and Mako and executes every migration: half a second at the start of every
    `recon` command, which only needs the id.
    """
    import ast

    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name in ("revision", "down_revision"):
                    value = ast.literal_eval(node.value)
                    values = value if isinstance(value, (tuple, list)) else [value]
                    (revisions if name == "revision" else parents).update(v for v in values if v)
    heads = revisions - parents
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} heads ({', '.join(sorted(heads))}): expected one")
    return heads.pop()


def check_schema(url: str) -> None:
    """Refuse to work on a database whose schema is missing or at another revision."""
    from sqlalchemy import inspect, text

    head = head_revision()
    u = make_url(normalise_url(url))
    shown = u.render_as_string(hide_password=True)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" and not Path(u.database).exists():
        raise SchemaError(f"no database file at {u.database}: run `recon db upgrade` first")
    try:
        with get_engine(url).connect() as conn:
            current = (conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                       if inspect(conn).has_table("alembic_version") else None)
    except Exception as exc:  # unreachable server, bad credentials, not a database file
        raise SchemaError(f"cannot open the database at {shown}: {exc.__class__.__name__}: {exc}".splitlines()[0]) from None
    if current is None:
        raise SchemaError(f"the database at {shown} has no reconbot schema yet: run `recon db upgrade` first")
    if current != head:
        raise SchemaError(f"the database at {shown} is at schema revision {current}, this reconbot needs {head}: "
                          "run `recon db upgrade`")
