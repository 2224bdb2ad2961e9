"""Helpers for the concurrency tests: races of real threads on real connections."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dcb_store import ConcurrencyError, DcbStoreError, DeadlockError, EventStore

ISOLATION_LEVELS = ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]
# ... and no transaction at all: SQLAlchemy's AUTOCOMMIT, each statement its own transaction
WITH_AUTOCOMMIT = [*ISOLATION_LEVELS, "AUTOCOMMIT"]


@dataclass
class Outcome:
    commits: int = 0
    conflicts: int = 0
    errors: list[BaseException] = field(default_factory=list)
    lock = threading.Lock()

    def add(self, result: str | BaseException) -> None:
        with self.lock:
            if result == "commit":
                self.commits += 1
            elif result == "conflict":
                self.conflicts += 1
            else:
                assert isinstance(result, BaseException)
                self.errors.append(result)


def jitter(max_ms: float = 5.0) -> None:
    time.sleep(random.random() * max_ms / 1000)


def run_unit(
    engine: Engine, isolation: str, work: Callable[[EventStore, Session], None]
) -> str | BaseException:
    """Run ``work`` in one transaction at ``isolation``; classify how it ended."""
    bound = engine.execution_options(isolation_level=isolation)
    try:
        with Session(bound) as session:
            work(EventStore(session, lock_timeout=20), session)
            jitter()
            try:
                session.commit()
            except DBAPIError as exc:  # SERIALIZABLE may refuse the commit itself
                if getattr(exc.orig, "sqlstate", None) == "40001":
                    return "conflict"
                raise
        return "commit"
    except DeadlockError as exc:  # a ConcurrencyError, but one the tests must see
        return exc
    except ConcurrencyError:
        return "conflict"
    except (DcbStoreError, DBAPIError) as exc:
        return exc


def race(n: int, make_work: Callable[[int], Callable[[], str | BaseException]]) -> Outcome:
    """Start ``n`` threads at once (a barrier) and gather how each unit of work ended."""
    outcome = Outcome()
    barrier = threading.Barrier(n)

    def runner(i: int) -> None:
        work = make_work(i)
        barrier.wait()
        try:
            outcome.add(work())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            outcome.add(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome
