"""Migrations in a database shared with roles they must not trust, and downgrades that lose data.

The planted objects are made by a separate unprivileged role (``SET ROLE``), as another
service or a compromised application role would make them; the migrations run as the
superuser, through ``dcb-store`` and the library.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, make_url, text

from dcb_store import Event, EventStore, migrations
from dcb_store.errors import MigrationRefusedError
from tests.host_project import dcb_store_cli, one_clear_line, repo_alembic, scalar, store_revision


@pytest.fixture
def planter(blank_db_url: str) -> Iterator[str]:
    """An unprivileged role that may CREATE in the database and in schema public."""
    role = f"dcb_planter_{uuid.uuid4().hex[:8]}"
    database = make_url(blank_db_url).database
    engine = create_engine(blank_db_url)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" NOLOGIN NOSUPERUSER NOCREATEROLE'))
        conn.execute(text(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"'))
        conn.execute(text(f'GRANT CREATE, USAGE ON SCHEMA public TO "{role}"'))
    yield role
    with engine.begin() as conn:
        conn.execute(text(f'DROP OWNED BY "{role}" CASCADE'))
        conn.execute(text(f'DROP ROLE "{role}"'))
    engine.dispose()


def as_role(url: str, role: str, *statements: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'SET LOCAL ROLE "{role}"'))
        for statement in statements:
            conn.execute(text(statement))
    engine.dispose()


def escalated(url: str, role: str) -> bool:
    return bool(scalar(url, f"SELECT rolcreaterole FROM pg_roles WHERE rolname = '{role}'"))


TRIGGER = """
CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I CREATEROLE', '{role}');  -- runs as whoever writes the table
    RETURN NULL;
END $$;
CREATE TRIGGER escalate BEFORE INSERT OR UPDATE OR DELETE ON public.dcb_store_alembic_version
    FOR EACH ROW EXECUTE FUNCTION public.escalate();
CREATE TRIGGER escalate_statement BEFORE TRUNCATE ON public.dcb_store_alembic_version
    FOR EACH STATEMENT EXECUTE FUNCTION public.escalate();
"""


def test_a_planted_legacy_version_table_is_refused_and_its_trigger_never_runs(
    blank_db_url: str, planter: str
) -> None:
    as_role(
        blank_db_url,
        planter,
        "CREATE TABLE public.dcb_store_alembic_version (version_num varchar(32) PRIMARY KEY)",
        TRIGGER.format(role=planter),
    )
    done = dcb_store_cli("upgrade", "--url", blank_db_url)
    one_clear_line(done, "dcb_store_alembic_version", planter)
    with pytest.raises(MigrationRefusedError, match="owned by role"):
        migrations.upgrade(blank_db_url)
    assert not escalated(blank_db_url, planter)
    assert not scalar(blank_db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'dcb'")


def test_a_legacy_table_of_ours_with_a_foreign_trigger_is_refused(
    blank_db_url: str, planter: str
) -> None:
    migrations.upgrade(blank_db_url)
    engine = create_engine(blank_db_url)
    with engine.begin() as conn:  # an earlier version's database: the record in public
        conn.execute(text("ALTER TABLE dcb.alembic_version RENAME TO dcb_store_alembic_version"))
        conn.execute(text("ALTER INDEX dcb.alembic_version_pkc RENAME TO dcb_store_alembic_pkc"))
        conn.execute(text("ALTER TABLE dcb.dcb_store_alembic_version SET SCHEMA public"))
        conn.execute(text(f'GRANT TRIGGER ON public.dcb_store_alembic_version TO "{planter}"'))
    engine.dispose()
    as_role(blank_db_url, planter, TRIGGER.format(role=planter))
    done = dcb_store_cli("upgrade", "--url", blank_db_url)
    one_clear_line(done, "dcb_store_alembic_version", "triggers")
    assert repo_alembic(blank_db_url, "upgrade", "head").returncode != 0
    assert not escalated(blank_db_url, planter)
    assert store_revision(blank_db_url) is None  # nothing moved


def test_a_dcb_schema_made_by_another_role_is_refused(blank_db_url: str, planter: str) -> None:
    as_role(blank_db_url, planter, "CREATE SCHEMA dcb")
    done = dcb_store_cli("upgrade", "--url", blank_db_url)
    one_clear_line(done, 'schema "dcb" is owned by role', planter)
    objects = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    assert scalar(blank_db_url, objects + "WHERE n.nspname = 'dcb'") == 0


def test_a_dcb_schema_others_may_create_in_is_refused(blank_db_url: str, planter: str) -> None:
    migrations.upgrade(blank_db_url, "0003_following")
    engine = create_engine(blank_db_url)
    with engine.begin() as conn:
        conn.execute(text(f'GRANT CREATE ON SCHEMA dcb TO "{planter}"'))
    engine.dispose()
    with pytest.raises(MigrationRefusedError, match="CREATE"):
        migrations.upgrade(blank_db_url)
    assert store_revision(blank_db_url) == "0003_following"


def test_an_unknown_schema_of_our_own_is_refused(blank_db_url: str) -> None:
    engine = create_engine(blank_db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA dcb"))
        conn.execute(text("CREATE TABLE dcb.events (x int)"))
    engine.dispose()
    with pytest.raises(MigrationRefusedError, match="no dcb_store version record"):
        migrations.upgrade(blank_db_url)


def test_an_empty_dcb_schema_of_the_migrating_role_is_used(blank_db_url: str) -> None:
    engine = create_engine(blank_db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA dcb"))  # a DBA prepared it for the migrating role
    engine.dispose()
    migrations.upgrade(blank_db_url)
    assert store_revision(blank_db_url) == migrations.head()


def test_a_downgrade_that_would_drop_events_refuses_unless_forced(fresh_db_url: str) -> None:
    engine = create_engine(fresh_db_url)
    with engine.begin() as conn:
        EventStore(conn).append(Event("Kept", {}, ["k:1"]))
    with pytest.raises(MigrationRefusedError, match="force"):
        migrations.downgrade(engine, "base")
    one_clear_line(dcb_store_cli("downgrade", "base", "--url", fresh_db_url), "--force")
    assert repo_alembic(fresh_db_url, "downgrade", "base").returncode != 0
    assert scalar(fresh_db_url, "SELECT count(*) FROM dcb.events") == 1
    migrations.downgrade(engine, "0003_following")  # keeps the events table: no force needed
    assert scalar(fresh_db_url, "SELECT count(*) FROM dcb.events") == 1
    forced = repo_alembic(fresh_db_url, "-x", "force=yes", "downgrade", "base")
    assert forced.returncode == 0, forced.stderr
    assert not scalar(fresh_db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'dcb'")
    migrations.upgrade(engine)
    with engine.begin() as conn:
        EventStore(conn).append(Event("Again", {}, ["k:1"]))
    done = dcb_store_cli("downgrade", "base", "--force", "--url", fresh_db_url)
    assert done.returncode == 0, done.stderr
    assert not scalar(fresh_db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'dcb'")
    migrations.downgrade(engine, "base")  # nothing there: a no-op, and nothing left behind
    assert not scalar(fresh_db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'dcb'")
    engine.dispose()
