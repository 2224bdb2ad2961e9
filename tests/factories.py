"""factory-boy factories for events."""

from __future__ import annotations

import factory

from dcb_store import Event


class EventFactory(factory.Factory):
    class Meta:
        model = Event

    type = factory.Iterator(["CourseDefined", "StudentSubscribed", "CourseRenamed"])
    data = factory.Sequence(lambda n: {"n": n})
    tags = factory.Sequence(lambda n: (f"course:c{n % 3}", f"student:s{n}"))
