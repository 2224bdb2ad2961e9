"""The dcb.events examples under concurrency: the rules hold however the racers interleave."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dcb_store import Event, EventStore, Query, RetryPolicy, run_in_transaction
from dcb_store.testing import InMemoryEventStore
from examples.dcb_examples import Refused, confirm, create_invoice, register, subscribe

POLICY = RetryPolicy(attempts=60, base_delay=0.002, max_delay=0.05)
T = TypeVar("T")


@pytest.fixture(autouse=True)
def slow_deciders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widen every decision window (read ... append) so that the racers really overlap."""
    original = EventStore.project

    def project(self, projections):  # type: ignore[no-untyped-def]
        result = original(self, projections)
        time.sleep(random.uniform(0.002, 0.01))
        return result

    monkeypatch.setattr(EventStore, "project", project)


def race(n: int, work: Callable[[int], object]) -> list[object]:
    results: list[object] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results.append(work(i))
        except Refused as refused:
            results.append(refused)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def decide(engine: Engine, decision: Callable[..., T], *args: object) -> T:
    """One decision on an EventStore of its own transaction, retried when it loses a race."""
    return run_in_transaction(engine, lambda s: decision(EventStore(s), *args), POLICY)


def seed(engine: Engine, *events: Event) -> None:
    with Session(engine) as s:
        EventStore(s).append(list(events))
        s.commit()


def test_course_capacity_and_student_load(engine: Engine) -> None:
    seed(engine, *(Event("CourseDefined", {"capacity": 3}, [f"course:c{i}"]) for i in range(5)))
    results = race(10, lambda i: decide(engine, subscribe, "c0", f"s{i}"))
    assert sum(r is None for r in results) == 3
    results = race(5, lambda i: decide(engine, subscribe, f"c{i}", "busy"))
    assert sum(r is None for r in results) == 3  # at most 3 courses per student
    with Session(engine) as s:
        assert (
            len(EventStore(s).read(Query.of(types=["StudentSubscribed"], tags=["student:busy"])))
            == 3
        )


def test_unique_username(engine: Engine) -> None:
    results = race(8, lambda i: decide(engine, register, f"u{i}", "alice"))
    assert sum(r is None for r in results) == 1


def test_consecutive_invoice_numbers(engine: Engine) -> None:
    numbers = race(10, lambda i: decide(engine, create_invoice, 100 + i))
    assert sorted(numbers) == list(range(1, 11))  # type: ignore[type-var]


def test_opt_in_token_confirms_once(engine: Engine) -> None:
    seed(engine, Event("SignUpInitiated", {"token": "t-123"}, ["email:a@example.com"]))
    results = race(
        6,
        lambda i: decide(engine, confirm, "a@example.com", "t-123"),
    )
    assert sum(r is None for r in results) == 1
    assert isinstance(
        race(
            1,
            lambda i: decide(engine, confirm, "a@example.com", "bad"),
        )[0],
        Refused,
    )


def test_the_decisions_run_on_the_in_memory_store_too() -> None:
    memory = InMemoryEventStore()
    memory.append(Event("CourseDefined", {"capacity": 1}, ["course:c1"]))
    subscribe(memory, "c1", "s1")
    with pytest.raises(Refused, match="full"):
        subscribe(memory, "c1", "s2")
    register(memory, "u1", "alice")
    with pytest.raises(Refused, match="taken"):
        register(memory, "u2", "alice")
    assert [create_invoice(memory, 10), create_invoice(memory, 20)] == [1, 2]
    memory.append(Event("SignUpInitiated", {"token": "t"}, ["email:a@example.com"]))
    confirm(memory, "a@example.com", "t")
    with pytest.raises(Refused, match="already"):
        confirm(memory, "a@example.com", "t")
