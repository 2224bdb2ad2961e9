"""``dcb-store demo``: students race for the last seats of a course.

Each student runs the DCB decision loop: read the course's events, decide whether a seat is
left, append ``StudentSubscribed`` on condition that nothing relevant changed since the read,
and retry on a conflict. However the threads interleave, the course never overflows.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dcb_store import AppendCondition, ConcurrencyError, Event, EventStore, Query

__all__ = ["run_demo"]


def _subscribe(
    engine: Engine, course: str, student: str, stats: Counter[str], schema: str = "dcb"
) -> str:
    query = Query.of(tags=[f"course:{course}"])
    for _attempt in range(50):
        with Session(engine) as session:
            store = EventStore(session, schema=schema)
            result = store.read(query)
            capacity = next(e.data["capacity"] for e in result if e.type == "CourseDefined")
            taken = sum(e.type == "StudentSubscribed" for e in result)
            if taken >= capacity:
                return "course full"
            try:
                store.append(
                    Event(
                        "StudentSubscribed",
                        {"student": student},
                        [f"course:{course}", f"student:{student}"],
                    ),
                    AppendCondition(query, result.head),
                )
                session.commit()
                return "subscribed"
            except ConcurrencyError:
                session.rollback()
                stats["conflicts (retried)"] += 1
    return "gave up"


def run_demo(
    engine: Engine, *, students: int = 12, capacity: int = 5, schema: str = "dcb"
) -> dict[str, int]:
    """Run the race and print what happened; return the counts."""
    course = f"c-{uuid.uuid4().hex[:6]}"
    with Session(engine) as session:
        EventStore(session, schema=schema).append(
            Event("CourseDefined", {"capacity": capacity}, [f"course:{course}"])
        )
        session.commit()
    print(f"Course {course}: {capacity} seats, {students} students subscribing at once")
    stats: Counter[str] = Counter()
    results: dict[str, str] = {}
    barrier = threading.Barrier(students)

    def student(i: int) -> None:
        barrier.wait()
        results[f"s{i}"] = _subscribe(engine, course, f"s{i}", stats, schema)

    threads = [threading.Thread(target=student, args=(i,)) for i in range(students)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in sorted(results, key=lambda s: int(s[1:])):
        print(f"  student {name:>4}: {results[name]}")
    with Session(engine) as session:
        stored = EventStore(session, schema=schema).read(
            Query.of(types=["StudentSubscribed"], tags=[f"course:{course}"])
        )
    counts = Counter(results.values())
    counts.update(stats)
    print(f"Stored subscriptions: {len(stored)} of {capacity} seats; {dict(counts)}")
    ok = len(stored) == capacity == counts["subscribed"]
    print("The course never overflowed." if ok else "INCONSISTENT: the course overflowed!")
    return dict(counts)
