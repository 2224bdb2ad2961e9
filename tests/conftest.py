"""Fixtures: a real PostgreSQL for every test.

The server is the one named by DCB_STORE_TEST_DSN, or else an embedded server started for the
session. A template database is migrated once; tests that need committed data and several
connections (concurrency) get a fresh clone of it, the rest a session whose work is rolled back.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from dcb_store import EventStore, embedded, migrations
from dcb_store.testing import rolled_back_session
from tests.replication import ReplicaPair, start_pair

TEMPLATE = f"dcb_test_template_{os.getpid()}"


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    dsn = os.environ.get("DCB_STORE_TEST_DSN")
    if dsn:
        yield str(migrations.normalize_url(dsn))
        return
    data_dir = tempfile.mkdtemp(prefix="dcb-store-test-pg-")
    url, server = embedded.start(data_dir)
    yield url
    server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


def _admin(server_url: str) -> Engine:
    return create_engine(server_url, isolation_level="AUTOCOMMIT", pool_size=1)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE}"'))
        conn.execute(text(f'CREATE DATABASE "{TEMPLATE}"'))
    url = make_url(server_url).set(database=TEMPLATE)
    migrations.upgrade(url)
    yield url.render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def fresh_db_url(server_url: str, template_url: str) -> Iterator[str]:
    """A new database cloned from the migrated template, dropped after the test."""
    name = f"dcb_t_{uuid.uuid4().hex[:12]}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def blank_db_url(server_url: str) -> Iterator[str]:
    """A new, empty database (no dcb schema), dropped after the test."""
    name = f"dcb_b_{uuid.uuid4().hex[:12]}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
    yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def engine(fresh_db_url: str) -> Iterator[Engine]:
    eng = create_engine(fresh_db_url, pool_size=40, max_overflow=10)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def shared_engine(template_url: str, server_url: str) -> Iterator[Engine]:
    """One migrated database shared by the rolled-back tests."""
    name = f"dcb_shared_{os.getpid()}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    eng = create_engine(make_url(server_url).set(database=name))
    yield eng
    eng.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def session(shared_engine: Engine) -> Iterator[Session]:
    """A Session joined to an outer transaction that is rolled back after the test."""
    with rolled_back_session(shared_engine) as sess:
        yield sess


@pytest.fixture
def store(session: Session) -> EventStore:
    return EventStore(session)


PASSWORD = "dcb-test-pw"
Login = Callable[..., Engine]


@pytest.fixture
def login(engine: Engine, fresh_db_url: str) -> Iterator[Login]:
    """``login(grant)``: a new LOGIN role granted by ``grant`` (None: PUBLIC only), an Engine."""
    created: list[tuple[str, Engine]] = []

    def make(grant: Callable[..., None] | None, **engine_kw: object) -> Engine:
        role = f"dcb_t13_{uuid.uuid4().hex[:10]}"
        with engine.begin() as conn:
            conn.execute(text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{PASSWORD}'"))
            if grant is not None:
                grant(conn, role)
        url = make_url(fresh_db_url).set(username=role, password=PASSWORD)
        role_engine = create_engine(url, **engine_kw)  # type: ignore[arg-type]
        created.append((role, role_engine))
        return role_engine

    yield make
    for _, role_engine in created:
        role_engine.dispose()
    with engine.begin() as conn:
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename LIKE 'dcb_t13_%' AND datname = current_database()"
            )
        )
        for role, _ in created:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


@pytest.fixture(scope="session")
def replica_pair() -> Iterator[ReplicaPair]:
    """A fresh primary cluster and a streaming hot standby of it (tests/replication.py).

    Made on first use, stopped at the end of the session; skipped where PostgreSQL's binaries
    (or, as root, a ``postgres`` OS user) are missing. Each test module migrates the store(s) it
    needs on ``replica_pair.primary_url`` (migrations are idempotent).
    """
    made, why = start_pair()
    if made is None:
        pytest.skip(f"no streaming replica can be made here: {why}")
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
def colliding_engine(engine: Engine) -> Engine:
    """Every lock key hashed into 2 bits: nearly every pair of keys collides.

    The hash width is part of ``dcb.lock_key_v2``'s body (no setting changes it in production);
    this test database gets a narrower one. Used by the collision tests of test_consistency.py
    and test_append_lock_plans.py.
    """
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION dcb.lock_key_v2(p_name text) RETURNS bigint "
                "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
                "SELECT (pg_catalog.hashtextextended(p_name, 1145258579) "
                "OPERATOR(pg_catalog.&) 3::bigint) "
                "OPERATOR(pg_catalog.|) '-2594073385365405696'::bigint $$"
            )
        )
    engine.dispose()
    return engine
