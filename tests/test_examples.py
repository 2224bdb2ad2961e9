"""The examples run as a user would run them."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text

from examples.unit_of_work.app import setup, subscribe


def test_unit_of_work_keeps_app_rows_and_events_together_under_concurrency(engine: Engine) -> None:
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
    assert results.count(True) == 4
    with engine.connect() as conn:
        cards = conn.execute(text("SELECT count(*) FROM seat_cards")).scalar_one()
        events = conn.execute(
            text("SELECT count(*) FROM dcb.events WHERE type = 'StudentSubscribed'")
        ).scalar_one()
    assert cards == events == 4
