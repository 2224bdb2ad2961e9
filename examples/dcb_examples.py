"""The classic examples of dcb.events, as decisions over dcb_store projections.

Each function is one decision: project, decide, append with the projections' condition. They
take any :class:`~dcb_store.EventStoreLike`: ``EventStore(session)`` run through
``run_in_transaction``, where concurrent callers never break the rule, or an
``InMemoryEventStore`` in a unit test.
"""

from __future__ import annotations

from dcb_store import Event, EventStoreLike, Projection, Query


class Refused(Exception):
    """The decision said no."""


def count(query: Query) -> Projection[int]:
    return Projection(query, 0, lambda n, _e: n + 1)


# Course subscriptions: a course has a capacity; a student takes at most 3 courses.
def subscribe(store: EventStoreLike, course: str, student: str) -> None:
    capacity = Projection(
        Query.of(types=["CourseDefined"], tags=[f"course:{course}"]),
        None,
        lambda _c, e: e.data["capacity"],
    )
    seats = count(Query.of(types=["StudentSubscribed"], tags=[f"course:{course}"]))
    load = count(Query.of(types=["StudentSubscribed"], tags=[f"student:{student}"]))
    (cap, taken, courses), condition = store.project([capacity, seats, load])
    if cap is None:
        raise Refused(f"no course {course}")
    if taken >= cap:
        raise Refused(f"course {course} is full")
    if courses >= 3:
        raise Refused(f"student {student} already takes 3 courses")
    store.append(
        Event("StudentSubscribed", {}, [f"course:{course}", f"student:{student}"]), condition
    )


# Unique username: a username is taken by the first registration.
def register(store: EventStoreLike, user: str, username: str) -> None:
    (taken,), condition = store.project(
        [count(Query.of(types=["UserRegistered"], tags=[f"username:{username}"]))]
    )
    if taken:
        raise Refused(f"username {username} is taken")
    store.append(
        Event("UserRegistered", {"user": user}, [f"username:{username}", f"user:{user}"]), condition
    )


# Consecutive invoice numbers: no gaps, no duplicates (a type-only projection).
def create_invoice(store: EventStoreLike, amount: int) -> int:
    last = Projection(Query.of(types=["InvoiceCreated"]), 0, lambda _n, e: e.data["number"])
    (number,), condition = store.project([last])
    store.append(
        Event(
            "InvoiceCreated", {"number": number + 1, "amount": amount}, [f"invoice:{number + 1}"]
        ),
        condition,
    )
    return int(number) + 1


# Opt-in token: a sign-up is confirmed once, with the token it was given.
def confirm(store: EventStoreLike, email: str, token: str) -> None:
    issued = Projection(
        Query.of(types=["SignUpInitiated"], tags=[f"email:{email}"]),
        None,
        lambda _t, e: e.data["token"],
    )
    confirmed = count(Query.of(types=["SignUpConfirmed"], tags=[f"email:{email}"]))
    (expected, done), condition = store.project([issued, confirmed])
    if expected != token:
        raise Refused("unknown token")
    if done:
        raise Refused("already confirmed")
    store.append(Event("SignUpConfirmed", {}, [f"email:{email}"]), condition)
