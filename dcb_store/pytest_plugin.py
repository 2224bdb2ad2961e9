"""A pytest plugin for applications that use dcb_store (loaded automatically once installed).

Fixtures, all prefixed ``dcb_`` so that they never collide with an application's own:

- ``dcb_engine`` (session): an Engine on a migrated database of its own, on the server named by
  ``--dcb-store-url`` or ``DCB_STORE_TEST_DSN``, else on an embedded PostgreSQL;
- ``dcb_session``: a Session whose work is rolled back after the test (SQLAlchemy's recipe for
  joining a session into an external transaction);
- ``dcb_store``: an :class:`~dcb_store.EventStore` on ``dcb_session``;
- ``dcb_memory_store``: an :class:`~dcb_store.testing.InMemoryEventStore`;
- ``dcb_event_factory``: a factory-boy factory for events (needs factory-boy).

It also has pytest rewrite the asserts of :class:`~dcb_store.testing.StoreContract`, so that a
failing scenario shows its values.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

pytest.register_assert_rewrite("dcb_store.contract")  # before anything imports it

from dcb_store import embedded, migrations  # noqa: E402
from dcb_store.store import EventStore  # noqa: E402
from dcb_store.testing import InMemoryEventStore, rolled_back_session  # noqa: E402


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--dcb-store-url``: the PostgreSQL server the dcb_* fixtures use."""
    parser.addoption(
        "--dcb-store-url", default=None, help="PostgreSQL server for the dcb_* fixtures"
    )


@pytest.fixture(scope="session")
def dcb_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An Engine on a fresh, migrated database, dropped at the end of the session."""
    url = request.config.getoption("--dcb-store-url") or os.environ.get("DCB_STORE_TEST_DSN")
    server = None
    if url:
        url = str(migrations.normalize_url(url))
    else:
        data_dir = os.path.join(embedded.default_data_dir(), f"plugin-{os.getpid()}")
        url, server = embedded.start(
            data_dir,
            hint="or point the dcb_* fixtures at a PostgreSQL server with --dcb-store-url "
            "or DCB_STORE_TEST_DSN",
        )
    name = f"dcb_plugin_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(make_url(url).set(database=name))
    migrations.upgrade(engine)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    if server is not None:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def dcb_session(dcb_engine: Engine) -> Iterator[Session]:
    """A Session whose work (events included) is rolled back after the test."""
    with rolled_back_session(dcb_engine) as session:
        yield session


@pytest.fixture
def dcb_store(dcb_session: Session) -> EventStore:
    """An EventStore on the rolled-back session."""
    return EventStore(dcb_session)


@pytest.fixture
def dcb_memory_store() -> InMemoryEventStore:
    """An in-memory store with the same contract (no database)."""
    return InMemoryEventStore()


@pytest.fixture
def dcb_event_factory() -> Any:
    """A factory-boy factory: ``dcb_event_factory(type="X", tags=["k:1"])``, ``.build_batch(n)``."""
    from dcb_store.factories import EventFactory

    return EventFactory
