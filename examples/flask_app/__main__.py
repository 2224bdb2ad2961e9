"""``python -m examples.flask_app``: serve the Flask example on http://127.0.0.1:8000.

``--demo`` instead sends 10 concurrent subscriptions for a course of 3 seats and prints the
outcome. The database is ``DATABASE_URL``, else a fresh one on the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import threading
from collections import Counter

from examples._database import database_url
from examples.flask_app.app import create_app


def demo(url: str) -> int:
    app = create_app(url)
    client = app.test_client()
    client.post("/courses/c1", json={"capacity": 3})
    statuses: list[int] = []
    barrier = threading.Barrier(10)

    def student(i: int) -> None:
        barrier.wait()
        response = app.test_client().post("/courses/c1/subscriptions", json={"student": f"s{i}"})
        statuses.append(response.status_code)

    threads = [threading.Thread(target=student, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    students = client.get("/courses/c1").json["students"]
    print(f"10 students, 3 seats: {dict(Counter(statuses))}; enrolled: {students}")
    return 0 if len(students) == 3 and statuses.count(201) == 3 else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.flask_app", description=__doc__)
    parser.add_argument("--demo", action="store_true", help="race 10 requests, print, exit")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1")
    args = parser.parse_args()
    url = database_url()
    if args.demo:
        return demo(url)
    print(
        f"try: curl -X POST -H 'Content-Type: application/json' -d '{{\"capacity\": 2}}' "
        f"http://127.0.0.1:{args.port}/courses/c1"
    )
    create_app(url).run(host="127.0.0.1", port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
