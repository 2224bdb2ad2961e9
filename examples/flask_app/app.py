"""Course subscriptions over HTTP: Flask + Flask-SQLAlchemy + dcb_store.

Run it: ``python -m examples.flask_app`` (``--demo`` to race requests and exit); install with
``pip install -e ".[examples]"``.

One request is one unit of work: the app's own ORM rows (``Enrolment``) and the events are
written through the same ``db.session`` and commit or roll back together. A decision that
loses a race is retried inside the request.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dcb_store import ConcurrencyError, Event, EventStore, Projection, Query, SchemaMissingError


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Enrolment(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    course: Mapped[str]
    student: Mapped[str]


def create_app(database_url: str) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 20, "max_overflow": 10}
    db.init_app(app)
    with app.app_context():
        db.create_all()  # the app's own tables; the dcb schema comes from the migrations

    @app.post("/courses/<course>")
    def define_course(course: str) -> Any:
        EventStore(db.session).append(
            Event("CourseDefined", {"capacity": request.json["capacity"]}, [f"course:{course}"])
        )
        db.session.commit()
        return jsonify(course=course), 201

    @app.post("/courses/<course>/subscriptions")
    def subscribe(course: str) -> Any:
        student = request.json["student"]
        for _attempt in range(30):
            store = EventStore(db.session)
            capacity = Projection(
                Query.of(types=["CourseDefined"], tags=[f"course:{course}"]),
                None,
                lambda _c, e: e.data["capacity"],
            )
            taken = Projection(
                Query.of(types=["StudentSubscribed"], tags=[f"course:{course}"]),
                0,
                lambda n, _e: n + 1,
            )
            (cap, seats), condition = store.project([capacity, taken])
            if cap is None:
                abort(404)
            if seats >= cap:
                db.session.rollback()
                return jsonify(error="course full"), 409
            db.session.add(Enrolment(course=course, student=student))
            try:
                store.append(
                    Event(
                        "StudentSubscribed",
                        {"student": student},
                        [f"course:{course}", f"student:{student}"],
                    ),
                    condition,
                )
                if request.args.get("fail_after_append"):
                    raise RuntimeError("the request failed after appending")
                db.session.commit()
                return jsonify(course=course, student=student), 201
            except ConcurrencyError:
                db.session.rollback()  # lost the race: decide again from fresh facts
        return jsonify(error="too much contention"), 503

    @app.get("/courses/<course>")
    def show(course: str) -> Any:
        rows = db.session.scalars(
            db.select(Enrolment.student).where(Enrolment.course == course)
        ).all()
        return jsonify(course=course, students=sorted(rows))

    @app.errorhandler(SchemaMissingError)
    def schema_missing(_exc: SchemaMissingError) -> Any:
        db.session.rollback()
        message = "the dcb_store schema is missing: run `dcb-store upgrade` on this database"
        return jsonify(error=message), 503

    @app.teardown_request
    def rollback_unfinished(_exc: BaseException | None) -> None:
        db.session.rollback()  # a request that did not commit leaves nothing behind

    return app
