"""Course subscriptions over HTTP, async: FastAPI + SQLAlchemy asyncio + ``AsyncEventStore``.

One request is one unit of work: the app's own ORM row (``Enrolment``) and the event are
written in one ``AsyncSession`` and commit together. A decision that loses a race runs again
in a fresh transaction (``run_in_transaction_async``). Run it: ``python -m examples.fastapi_app``
(``--demo`` to race requests and exit); install with ``pip install -e ".[examples]"``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dcb_store import (
    AsyncEventStore,
    Event,
    Projection,
    Query,
    RetryPolicy,
    SchemaMissingError,
    migrations,
    run_in_transaction_async,
)


class Base(DeclarativeBase):
    pass


class Enrolment(Base):
    __tablename__ = "fastapi_enrolments"
    id: Mapped[int] = mapped_column(primary_key=True)
    course: Mapped[str]
    student: Mapped[str]


class CourseIn(BaseModel):
    capacity: int = Field(ge=1, le=10_000)


class StudentIn(BaseModel):
    student: str = Field(min_length=1, max_length=100)


def capacity_of(course: str) -> Projection[int | None]:
    query = Query.of(types=["CourseDefined"], tags=[f"course:{course}"])
    return Projection(query, None, lambda _c, e: e.data["capacity"])


def seats_taken(course: str) -> Projection[int]:
    query = Query.of(types=["StudentSubscribed"], tags=[f"course:{course}"])
    return Projection(query, 0, lambda n, _e: n + 1)


def create_app(database_url: str) -> FastAPI:
    engine = create_async_engine(
        str(migrations.normalize_url(database_url)), pool_size=20, max_overflow=10
    )
    retry = RetryPolicy(attempts=30)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:  # the app's own table; dcb comes from the migrations
            await conn.run_sync(Base.metadata.create_all)
        yield
        await engine.dispose()

    app = FastAPI(title="Course subscriptions (dcb_store example)", lifespan=lifespan)

    @app.exception_handler(SchemaMissingError)
    async def schema_missing(_request: Request, _exc: SchemaMissingError) -> JSONResponse:
        message = "the dcb_store schema is missing: run `dcb-store upgrade` on this database"
        return JSONResponse({"error": message}, status_code=503)

    @app.post("/courses/{course}", status_code=201)
    async def define_course(course: str, body: CourseIn) -> dict[str, str]:
        async def work(session: AsyncSession) -> None:
            event = Event("CourseDefined", {"capacity": body.capacity}, [f"course:{course}"])
            await AsyncEventStore(session).append(event)

        await run_in_transaction_async(engine, work, retry)
        return {"course": course}

    @app.post("/courses/{course}/subscriptions", status_code=201)
    async def subscribe(course: str, body: StudentIn) -> dict[str, str]:
        async def decide(session: AsyncSession) -> str:
            store = AsyncEventStore(session)
            (capacity, taken), condition = await store.project(
                [capacity_of(course), seats_taken(course)]
            )
            if capacity is None:
                return "no such course"
            if taken >= capacity:
                return "course full"
            session.add(Enrolment(course=course, student=body.student))
            tags = [f"course:{course}", f"student:{body.student}"]
            event = Event("StudentSubscribed", {"student": body.student}, tags)
            await store.append(event, condition)
            return "subscribed"

        outcome = await run_in_transaction_async(engine, decide, retry)
        if outcome == "no such course":
            raise HTTPException(404, outcome)
        if outcome == "course full":
            raise HTTPException(409, outcome)
        return {"course": course, "student": body.student}

    @app.get("/courses/{course}")
    async def show(course: str) -> dict[str, object]:
        async with AsyncSession(engine) as session:
            rows = await session.scalars(
                select(Enrolment.student).where(Enrolment.course == course)
            )
            return {"course": course, "students": sorted(rows)}

    return app
