"""``python -m examples.unit_of_work``: 12 threads subscribe to a course of 4 seats.

Each subscription is one unit of work (the app's seat card and the event commit together),
retried on a lost race. The database is ``DATABASE_URL``, else a fresh one on the embedded
PostgreSQL.
"""

from __future__ import annotations

import threading

from sqlalchemy import create_engine, text

from examples._database import database_url
from examples.unit_of_work.app import setup, subscribe


def main() -> int:
    engine = create_engine(database_url(), pool_size=14)
    setup(engine, "c1", capacity=4)
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(subscribe(engine, "c1", f"s{i}")))
        for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with engine.connect() as conn:
        cards = conn.execute(text("SELECT count(*) FROM seat_cards")).scalar_one()
    engine.dispose()
    print(f"12 students, 4 seats: {results.count(True)} subscribed, {cards} seat cards")
    return 0 if results.count(True) == cards == 4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
