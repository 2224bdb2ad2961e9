"""``python -m examples.fastapi_app``: serve the FastAPI example on http://127.0.0.1:8000.

``--demo`` instead starts it on a free port, sends 20 concurrent subscriptions for a course of
5 seats, prints the outcome and exits. The database is ``DATABASE_URL``, else a fresh one on
the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

import httpx
import uvicorn

from examples._database import database_url
from examples.fastapi_app.app import create_app
from examples.fastapi_app.serving import running


async def race(base: str, students: int = 20, capacity: int = 5) -> tuple[list[int], list[str]]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await client.post("/courses/c1", json={"capacity": capacity})
        responses = await asyncio.gather(
            *(
                client.post("/courses/c1/subscriptions", json={"student": f"s{i}"})
                for i in range(students)
            )
        )
        enrolled = (await client.get("/courses/c1")).json()["students"]
    return [r.status_code for r in responses], enrolled


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.fastapi_app", description=__doc__)
    parser.add_argument("--demo", action="store_true", help="race 20 requests, print, exit")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1")
    args = parser.parse_args()
    app = create_app(database_url())
    if not args.demo:
        uvicorn.run(app, host="127.0.0.1", port=args.port)
        return 0
    with running(app) as base:
        statuses, enrolled = asyncio.run(race(base))
    print(f"20 students, 5 seats: {dict(Counter(statuses))}; enrolled: {enrolled}")
    return 0 if len(enrolled) == 5 and statuses.count(201) == 5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
