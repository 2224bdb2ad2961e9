"""Several stores in one database: no shared events, heads, locks, markers or notifications."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    Event,
    EventStore,
    LockTimeoutError,
    ProjectionRunner,
    Query,
    subscribe,
)
from tests.several_stores import STORES, head, in_flight, migrate_stores, timed


@pytest.fixture
def stores(fresh_db_url: str) -> Iterator[Engine]:
    """An Engine on a database holding the stores dcb, billing and tenant_7."""
    migrate_stores(fresh_db_url)
    eng = create_engine(fresh_db_url, pool_size=10)
    yield eng
    eng.dispose()


def test_stores_never_see_each_others_events(stores: Engine) -> None:
    with Session(stores) as s:
        for n, schema in enumerate(STORES, start=1):
            store = EventStore(s, schema=schema)
            for i in range(n):
                store.append(Event(f"{schema}.E", {"i": i}, tags=["course:c1"]))
        s.commit()
    with Session(stores) as s:
        for n, schema in enumerate(STORES, start=1):
            store = EventStore(s, schema=schema)
            events = store.read().events
            assert [e.type for e in events] == [f"{schema}.E"] * n
            assert [e.position for e in events] == list(range(1, n + 1))  # a sequence each
            assert store.head() == n and store.head(Query.of(tags=["course:c1"])) == n
            assert [e.type for e in store.stream(batch_size=1)] == [f"{schema}.E"] * n
            assert store.read(Query.of(types=["dcb.E"])).events == [] or schema == "dcb"


def test_a_condition_is_not_failed_by_another_stores_events(stores: Engine) -> None:
    query = Query.of(tags=["course:c1"])
    with Session(stores) as s:
        billing = EventStore(s, schema="billing")
        condition = AppendCondition(query, after=billing.read(query).head)
        EventStore(s, schema="dcb").append(Event("Booked", tags=["course:c1"]))
        EventStore(s, schema="tenant_7").append(Event("Booked", tags=["course:c1"]))
        assert billing.append(Event("Invoiced", tags=["course:c1"]), condition) == 1
        s.commit()


@pytest.mark.parametrize(("holder", "other"), [("dcb", "billing"), ("billing", "tenant_7")])
def test_lock_keys_of_one_store_do_not_block_another(
    stores: Engine, holder: str, other: str
) -> None:
    query = Query.of(tags=["course:c1"])
    with Session(stores) as s1:  # holds a lock tag and a condition key, uncommitted
        EventStore(s1, schema=holder).append(Event("A", tags=["lock:k:1"]))
        EventStore(s1, schema=holder).append(
            Event("B", tags=["course:c1"]), AppendCondition(query, after=None)
        )
        with Session(stores) as s2:
            store = EventStore(s2, schema=other, lock_timeout=0.5)
            _, took = timed(lambda: store.append(Event("A", tags=["lock:k:1"])))
            assert took < 0.4, f"{other} waited {took:.2f}s for a lock key of {holder}"
            _, took = timed(
                lambda: store.append(
                    Event("B", tags=["course:c1"]), AppendCondition(query, after=None)
                )
            )
            assert took < 0.4, f"{other} waited {took:.2f}s for a condition key of {holder}"
            s2.commit()
        with Session(stores) as s3:  # the holder's own store still waits for it
            same = EventStore(s3, schema=holder, lock_timeout=0.2)
            with pytest.raises(LockTimeoutError):
                same.append(Event("A", tags=["lock:k:1"]))
            s3.rollback()
            with pytest.raises(LockTimeoutError):
                same.append(Event("B", tags=["course:c1"]), AppendCondition(query, after=None))
        s1.rollback()


def test_in_flight_markers_cap_only_their_own_store(stores: Engine) -> None:
    with Session(stores) as s:
        for schema in ("dcb", "billing"):
            EventStore(s, schema=schema).append(Event("Before"))
        s.commit()
    with Session(stores) as open_dcb, Session(stores) as open_billing:
        EventStore(open_dcb, schema="dcb").append(Event("InFlight"))  # dcb position 2, open
        EventStore(open_billing, schema="billing").append(Event("InFlight"))  # billing 2, open
        with Session(stores) as s:
            assert EventStore(s, schema="dcb").append(Event("After")) == 3
            assert EventStore(s, schema="tenant_7").append(Event("After")) == 1
            s.commit()
        # each store is capped below its own open append only
        assert head(stores, "dcb") == 1 and in_flight(stores, "dcb") == 1
        assert head(stores, "billing") == 1 and in_flight(stores, "billing") == 1
        assert head(stores, "tenant_7") == 1 and in_flight(stores, "tenant_7") == 0
        open_billing.rollback()
        assert head(stores, "dcb") == 1 and head(stores, "billing") == 1
        with Session(stores) as s:
            assert EventStore(s, schema="billing").append(Event("After")) == 3
            s.commit()
        assert head(stores, "billing") == 3 and in_flight(stores, "billing") == 0
        assert head(stores, "dcb") == 1  # still below dcb's open append
        open_dcb.commit()
    assert head(stores, "dcb") == 3


def test_a_follower_of_one_store_is_not_held_back_or_fed_by_another(stores: Engine) -> None:
    with Session(stores) as s:
        EventStore(s, schema="billing").append(Event("B1"))
        s.commit()
    seen: list[str] = []
    got_two = threading.Event()
    sub = subscribe(stores, schema="billing", poll_interval=30, busy_interval=30)

    def follow() -> None:
        for event in sub:
            seen.append(event.type)
            if len(seen) == 2:
                got_two.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    with Session(stores) as open_dcb:
        EventStore(open_dcb, schema="dcb").append(Event("D-open"))  # in flight in dcb
        with Session(stores) as s:
            EventStore(s, schema="dcb").append(Event("D"))
            EventStore(s, schema="tenant_7").append(Event("T"))
            s.commit()
        with Session(stores) as s:
            EventStore(s, schema="billing").append(Event("B2"))
            s.commit()
        # billing's NOTIFY wakes it at once (its polls are 30 s apart), past dcb's open append
        assert got_two.wait(10), f"billing's follower saw only {seen}"
        open_dcb.rollback()
    sub.stop()
    thread.join(40)
    assert seen == ["B1", "B2"]


def test_notifications_go_to_the_stores_own_channel(stores: Engine, fresh_db_url: str) -> None:
    dsn = fresh_db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN dcb_events")
        listener.execute("LISTEN billing_events")
        with Session(stores) as s:
            EventStore(s, schema="billing").append(Event("B"))
            s.commit()
        channels = [n.channel for n in listener.notifies(timeout=1, stop_after=5)]
        assert channels == ["billing_events"]
        with Session(stores) as s:
            EventStore(s, schema="tenant_7").append(Event("T"))
            EventStore(s, schema="dcb").append(Event("D"))
            s.commit()
        assert [n.channel for n in listener.notifies(timeout=1, stop_after=5)] == ["dcb_events"]


@pytest.mark.parametrize("commit", [True, False])
def test_one_transaction_appends_to_two_stores_atomically(stores: Engine, commit: bool) -> None:
    with Session(stores) as s:
        EventStore(s, schema="dcb").append(Event("Ordered", tags=["order:1"]))
        EventStore(s, schema="billing").append(Event("Invoiced", tags=["order:1"]))
        EventStore(s, schema="dcb").append(Event("Shipped", tags=["order:1"]))  # 2nd in dcb
        s.commit() if commit else s.rollback()
    with Session(stores) as s:
        dcb = [e.type for e in EventStore(s, schema="dcb").read().events]
        billing = [e.type for e in EventStore(s, schema="billing").read().events]
    assert (dcb, billing) == ((["Ordered", "Shipped"], ["Invoiced"]) if commit else ([], []))
    assert in_flight(stores, "dcb") == in_flight(stores, "billing") == 0


def test_projection_runners_keep_checkpoints_per_store(stores: Engine) -> None:
    with Session(stores) as s:
        EventStore(s, schema="dcb").append([Event("D"), Event("D")])
        EventStore(s, schema="billing").append(Event("B"))
        s.commit()
    applied: dict[str, list[str]] = {"dcb": [], "billing": []}

    def runner(schema: str) -> ProjectionRunner:
        return ProjectionRunner(
            stores,
            "totals",
            lambda _s, events: applied[schema].extend(e.type for e in events),
            schema=schema,
        )

    assert runner("billing").run_once() == 1 and runner("billing").position() == 1
    assert runner("dcb").position() == 0  # same name, the other store's checkpoint
    assert runner("dcb").run_once() == 2 and runner("dcb").position() == 2
    assert applied == {"dcb": ["D", "D"], "billing": ["B"]}
