"""A host application adopts the store with one line in its Alembic ``env.py``.

Driven as a user drives it: ``alembic init``, a model, ``alembic revision --autogenerate``,
``alembic upgrade head``, ``alembic downgrade``, ``alembic upgrade head --sql`` and
``dcb-store ...``, in a temporary project, as subprocesses.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from sqlalchemy import create_engine, text

from dcb_store import Event, EventStore, migrations
from tests.host_project import (
    ROOT,
    alembic,
    dcb_store_cli,
    make_host,
    repo_alembic,
    scalar,
    store_revision,
)

PACKAGE_VERSIONS = ROOT / "dcb_store" / "alembic" / "versions"


def revision_file(host: Path, message: str) -> str:
    (found,) = [p for p in (host / "migrations" / "versions").glob("*.py") if message in p.name]
    return found.read_text()


def upgrade_body(source: str) -> str:
    return source.split("def upgrade()", 1)[1].split("def downgrade()", 1)[0]


def test_one_line_in_env_py_and_alembic_upgrade_head_brings_both_schemas(
    blank_db_url: str, tmp_path: Path
) -> None:
    host = make_host(tmp_path / "host", blank_db_url)
    migrations.upgrade(blank_db_url, "0004_append_v2")  # an older store: the host brings it up

    made = alembic(host, "revision", "--autogenerate", "-m", "accounts")
    assert made.returncode == 0, made.stderr
    accounts = revision_file(host, "accounts")
    assert "create_table('accounts'" in accounts or 'create_table("accounts"' in accounts
    assert "dcb" not in upgrade_body(accounts)  # nothing about the store's objects
    assert not any("accounts" in p.read_text() for p in PACKAGE_VERSIONS.glob("*.py"))

    up = alembic(host, "upgrade", "head")  # singular: one head, the host's
    assert up.returncode == 0, up.stderr
    assert store_revision(blank_db_url) == migrations.head()
    assert scalar(blank_db_url, "SELECT count(*) FROM alembic_version") == 1
    assert scalar(blank_db_url, "SELECT to_regclass('public.accounts') IS NOT NULL")
    assert not scalar(blank_db_url, "SELECT to_regclass('dcb_store_alembic_version') IS NOT NULL")

    again = alembic(host, "revision", "--autogenerate", "-m", "nothing")
    assert again.returncode == 0, again.stderr
    assert "op." not in upgrade_body(revision_file(host, "nothing"))  # store invisible
    (next(p for p in (host / "migrations" / "versions").glob("*nothing*.py"))).unlink()

    engine = create_engine(blank_db_url)
    with engine.begin() as conn:
        EventStore(conn).append(Event("Opened", {}, ["account:1"]))
    down = alembic(host, "downgrade", "base")  # the host's schema only
    assert down.returncode == 0, down.stderr
    assert not scalar(blank_db_url, "SELECT to_regclass('public.accounts') IS NOT NULL")
    assert scalar(blank_db_url, "SELECT count(*) FROM dcb.events") == 1
    assert store_revision(blank_db_url) == migrations.head()
    engine.dispose()

    offline = alembic(host, "upgrade", "head", "--sql")  # the host's SQL ...
    assert offline.returncode == 0, offline.stderr
    assert "CREATE TABLE accounts" in offline.stdout and "dcb." not in offline.stdout
    store_sql = dcb_store_cli("sql")  # ... and its documented equivalent for the store
    assert store_sql.returncode == 0, store_sql.stderr
    assert "CREATE TABLE dcb.events" in store_sql.stdout
    assert "INSERT INTO dcb.alembic_version" in store_sql.stdout


def test_offline_sql_builds_the_store_a_later_upgrade_accepts(blank_db_url: str) -> None:
    from io import StringIO

    script = StringIO()
    migrations.write_sql(script)
    engine = create_engine(blank_db_url)
    with engine.connect() as conn:
        conn.connection.driver_connection.execute(script.getvalue())  # type: ignore[union-attr]
    engine.dispose()
    assert store_revision(blank_db_url) == migrations.head()
    migrations.upgrade(blank_db_url)  # a no-op
    done = dcb_store_cli("upgrade", "--url", blank_db_url)
    assert done.returncode == 0, done.stderr


def legacy(url: str) -> None:
    """Make ``url`` look migrated by an earlier version: the record in the default schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE dcb.alembic_version RENAME TO dcb_store_alembic_version"))
        conn.execute(text("ALTER INDEX dcb.alembic_version_pkc RENAME TO dcb_store_alembic_pkc"))
        conn.execute(text("ALTER TABLE dcb.dcb_store_alembic_version SET SCHEMA public"))
    engine.dispose()


def test_a_database_of_an_earlier_version_carries_over(blank_db_url: str, tmp_path: Path) -> None:
    migrations.upgrade(blank_db_url, "0005_fast_paths")
    legacy(blank_db_url)
    host = make_host(tmp_path / "host", blank_db_url)
    up = alembic(host, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert store_revision(blank_db_url) == migrations.head()
    assert not scalar(blank_db_url, "SELECT to_regclass('dcb_store_alembic_version') IS NOT NULL")
    made = alembic(host, "revision", "--autogenerate", "-m", "accounts")
    assert made.returncode == 0, made.stderr
    body = upgrade_body(revision_file(host, "accounts"))
    assert "accounts" in body and "alembic_version" not in body  # no drop_table proposed


def test_every_route_works_after_every_other(blank_db_url: str, tmp_path: Path) -> None:
    host = make_host(tmp_path / "host", blank_db_url)

    def host_alembic() -> None:
        done = alembic(host, "upgrade", "head")
        assert done.returncode == 0, done.stderr

    def library() -> None:
        migrations.upgrade(blank_db_url)

    def cli() -> None:
        done = dcb_store_cli("upgrade", "--url", blank_db_url)
        assert done.returncode == 0, done.stderr

    def repository() -> None:
        done = repo_alembic(blank_db_url, "upgrade", "head")
        assert done.returncode == 0, done.stderr

    routes = [host_alembic, library, cli, repository]
    # every ordered pair of routes (a, b), a == b included, is one step of this walk
    order = [0, 3, 3, 2, 3, 1, 3, 0, 2, 2, 1, 2, 0, 1, 1, 0, 0]
    steps = set(zip(order[:-1], order[1:], strict=True))
    assert steps == set(itertools.product(range(4), repeat=2))
    walk = [routes[i] for i in order]
    for i, route in enumerate(walk):  # the first one starts from an empty database
        if i % 2:  # every other step has a real upgrade to do
            migrations.downgrade(blank_db_url, "0003_following")
        route()
        assert store_revision(blank_db_url) == migrations.head(), route.__name__
    legacy(blank_db_url)  # and each route takes over an earlier version's database
    for route in routes:
        route()
        assert store_revision(blank_db_url) == migrations.head(), route.__name__
        if route is not routes[-1]:
            legacy(blank_db_url)


def test_host_autogenerate_on_every_schema_with_include_name(
    blank_db_url: str, tmp_path: Path
) -> None:
    host = make_host(tmp_path / "host", blank_db_url)
    env_py = host / "migrations" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            "connection=connection, target_metadata=target_metadata",
            "connection=connection, target_metadata=target_metadata, include_schemas=True, "
            "include_name=dcb_store.migrations.include_name",
        )
    )
    made = alembic(host, "revision", "--autogenerate", "-m", "accounts")
    assert made.returncode == 0, made.stderr
    body = upgrade_body(revision_file(host, "accounts"))
    assert "accounts" in body and "dcb" not in body and "events" not in body
