"""A host application's own Alembic environment builds the library's schema and its own.

The host adds the library's revisions as the package resource ``dcb_store:alembic/versions``
(Alembic's code for that form has no tests of its own) and must split version_locations on
spaces: with ``path_separator = os`` the colon of the resource splits it in two, and Alembic
silently finds no revisions (the trap).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dcb_store import Event, EventStore, migrations

HOST_ENV = """
import os
from sqlalchemy import create_engine, pool
from alembic import context

engine = create_engine(os.environ["DATABASE_URL"], poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""

HOST_REVISION = """
from alembic import op

revision = "host_0001"
down_revision = None
branch_labels = ("host",)
depends_on = "0001_dcb_v1"  # the library's schema first


def upgrade() -> None:
    op.execute("CREATE TABLE enrolments (student text PRIMARY KEY)")
    op.execute("CREATE VIEW recent_events AS SELECT position, type FROM dcb.events")


def downgrade() -> None:
    op.execute("DROP VIEW recent_events")
    op.execute("DROP TABLE enrolments")
"""


def dcb_schema_exists(url: str) -> bool:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM pg_namespace WHERE nspname = 'dcb'")
        ).scalar_one()
    engine.dispose()
    return bool(found)


def make_host(tmp_path: Path, separator: str) -> Path:
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(HOST_ENV)
    (tmp_path / "migrations" / "versions" / "host_0001.py").write_text(HOST_REVISION)
    # The two lines a host adds: the library's versions, and a separator that is not ":".
    (tmp_path / "alembic.ini").write_text(
        textwrap.dedent(f"""\
        [alembic]
        script_location = %(here)s/migrations
        version_locations = %(here)s/migrations/versions dcb_store:alembic/versions
        path_separator = {separator}
        """)
    )
    return tmp_path / "alembic.ini"


def alembic(ini: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ini.parent,
    )


@pytest.fixture
def empty_db(fresh_db_url: str) -> str:
    engine = create_engine(fresh_db_url)
    with engine.begin() as conn:
        migrations.downgrade(conn, "base")
        conn.execute(text("DROP TABLE dcb_store_alembic_version"))
    engine.dispose()
    return fresh_db_url


def test_host_upgrade_heads_builds_both_schemas_in_order(empty_db: str, tmp_path: Path) -> None:
    ini = make_host(tmp_path, "space")
    done = alembic(ini, empty_db, "upgrade", "heads")
    assert done.returncode == 0, done.stderr
    engine = create_engine(empty_db)
    with engine.begin() as conn:
        heads = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
        assert heads == {"host_0001", "0006_conditions"}
        EventStore(conn).append(Event("Enrolled", tags=["student:s1"]))
        conn.execute(text("INSERT INTO enrolments VALUES ('s1')"))
        assert conn.execute(text("SELECT count(*) FROM recent_events")).scalar_one() == 1
    engine.dispose()
    offline = alembic(ini, empty_db, "upgrade", "heads", "--sql")
    assert offline.returncode == 0 and "CREATE FUNCTION dcb.append_v1" in offline.stdout
    down = alembic(ini, empty_db, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert not dcb_schema_exists(empty_db)


def test_the_path_separator_trap(empty_db: str, tmp_path: Path) -> None:
    # ":" (os.pathsep on POSIX) splits "dcb_store:alembic/versions": Alembic then finds no
    # revisions at all and "succeeds" having built nothing. Hence "path_separator = space".
    ini = make_host(tmp_path, "os")
    alembic(ini, empty_db, "upgrade", "heads")
    assert not dcb_schema_exists(empty_db)
