"""factory-boy factories for events (requires factory-boy, a test dependency)."""

from __future__ import annotations

import factory

from dcb_store.events import Event

__all__ = ["EventFactory"]


class EventFactory(factory.Factory):
    """Events with a sequence number in their data and two tags."""

    class Meta:  # noqa: D106 - factory-boy's configuration
        model = Event

    type = factory.Iterator(["CourseDefined", "StudentSubscribed", "CourseRenamed"])
    data = factory.Sequence(lambda n: {"n": n})
    tags = factory.Sequence(lambda n: (f"course:c{n % 3}", f"student:s{n}"))
