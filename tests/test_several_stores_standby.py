"""Several stores in one database, followed on a hot standby: each store's own heads and events."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from dcb_store import Event, EventStore, ProjectionRunner, migrations, subscribe
from tests.replication import ReplicaPair, start_pair


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Engine, Engine]]:
    made, why = start_pair()
    if made is None:
        pytest.skip(f"no streaming replica can be made here: {why}")
    pair: ReplicaPair = made
    try:
        migrations.upgrade(pair.primary_url)
        migrations.upgrade(pair.primary_url, schema="billing")
        pair.wait_for_standby()
        primary, standby = create_engine(pair.primary_url), create_engine(pair.standby_url)
        yield primary, standby
        primary.dispose()
        standby.dispose()
    finally:
        pair.stop()


def test_a_store_other_than_dcb_streams_and_follows_on_a_standby(
    engines: tuple[Engine, Engine],
) -> None:
    primary, standby = engines
    with Session(primary) as s:
        EventStore(s).append([Event("D1"), Event("D2"), Event("D3")])
        EventStore(s, schema="billing").append([Event("B1"), Event("B2")])
        s.commit()
    with Session(primary) as s:
        billing = EventStore(s, schema="billing")
        streamed = [e.type for e in billing.stream(batch_size=1, replica=standby)]
        assert streamed == ["B1", "B2"]
        assert [e.type for e in EventStore(s).stream(replica=standby)] == ["D1", "D2", "D3"]
    sub = subscribe(primary, schema="billing", replica=standby, poll_interval=0.2)
    try:
        assert [next(sub).type for _ in range(2)] == ["B1", "B2"]
    finally:
        sub.close()
    seen: list[str] = []
    runner = ProjectionRunner(
        primary,
        "standby-totals",
        lambda _s, events: seen.extend(e.type for e in events),
        schema="billing",
        replica=standby,
    )
    assert runner.run_once() == 2 and seen == ["B1", "B2"] and runner.position() == 2
