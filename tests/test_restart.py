"""A server restart between calls: the engine's pool (pre-ping) survives it; without pre-ping the
first call after the restart fails with a clear DcbStoreError and the next one works."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from dcb_store import DatabaseError, Event, EventStore, embedded, migrations


def test_pool_survives_a_server_restart() -> None:
    data = Path(tempfile.mkdtemp(prefix="dcb-restart-")) / "data"
    url, server = embedded.start(data)
    migrations.upgrade(url)
    pinged = create_engine(url, pool_pre_ping=True)
    plain = create_engine(url)
    for engine in (pinged, plain):
        with Session(engine) as s:
            EventStore(s).append(Event("Before"))
            s.commit()
    server.cleanup()  # stop the server: every pooled connection is now dead
    url2, server = embedded.start(data)
    assert url2 == url
    try:
        with Session(pinged) as s:
            EventStore(s).append(Event("AfterWithPrePing"))
            s.commit()
        with Session(plain) as s, pytest.raises(DatabaseError):
            EventStore(s).append(Event("AfterWithoutPrePing"))
        with Session(plain) as s:  # the pool threw the dead connection away
            EventStore(s).append(Event("AfterRetry"))
            s.commit()
        with Session(pinged) as s:
            assert [e.type for e in EventStore(s).read()] == [
                "Before",
                "Before",
                "AfterWithPrePing",
                "AfterRetry",
            ]
    finally:
        pinged.dispose()
        plain.dispose()
        server.cleanup()
