"""Rows of ``read_v1`` into events: what every read and stream spends its client time on.

Sync and async stores, subscriptions and replica reads all build their events here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel

from dcb_store._impl.statements import ReadCall
from dcb_store.errors import UnreadableEventError
from dcb_store.events import Event, SequencedEvent
from dcb_store.limits import MAX_TAG_LENGTH, MAX_TAGS_PER_EVENT
from dcb_store.reading import ReadResult

__all__ = ["StreamPage", "read_result", "to_event"]

# One set per model, shared by every event read: both models are frozen, so nothing adds to
# it (pydantic's model_copy copies it before updating), and a new set per event cost 0.4 us.
_EVENT_FIELDS = {"type", "data", "tags", "metadata", "id"}
_SEQUENCED_FIELDS = {"position", "event", "recorded_at"}


_new = object.__new__
_set = object.__setattr__
# PostgreSQL writes jsonb as text without leading whitespace: raw_decode needs no checks.
_decode = json.JSONDecoder().raw_decode


# the three slots of every pydantic v2 model, set through their descriptors (a fifth cheaper
# than object.__setattr__ by name)
_slots: dict[str, Any] = dict(vars(BaseModel))
_set_fields_set = _slots["__pydantic_fields_set__"].__set__
_set_extra = _slots["__pydantic_extra__"].__set__
_set_private = _slots["__pydantic_private__"].__set__


def _trusted(cls: type[Any], fields_set: set[str], values: dict[str, Any]) -> Any:
    """Build a pydantic model from values the database already holds validated.

    ``model_construct`` costs several microseconds per call and dominated streaming; a pydantic
    v2 model is its ``__dict__`` plus three slots, which this fills directly.
    """
    obj = _new(cls)
    _set(obj, "__dict__", values)
    _set_fields_set(obj, fields_set)
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def to_event(row: Sequence[Any]) -> SequencedEvent:
    """A SequencedEvent from a row of :data:`READ` (its first column, the head, is skipped).

    ``data`` and ``metadata`` arrive as JSON text (``metadata`` may be None). The row is
    trusted (no pydantic validation) but checked for what the events table could not always
    rule out (rows written by plain SQL, or before its checks existed): a row that cannot be an
    Event raises :class:`UnreadableEventError` naming its position, never a RecursionError.
    """
    _head, position, type_, tags, data, metadata, id_, recorded_at = row
    try:
        data = _decode(data)[0]
        if metadata is not None:
            metadata = _decode(metadata)[0]
    except (RecursionError, ValueError) as exc:  # JSON nested too deep, a giant number
        raise UnreadableEventError(position, f"its JSON cannot be decoded ({exc})") from exc
    tags = tuple(tags)
    try:  # one cheap test for the common case; join raises TypeError on a NULL tag
        suspect = len("".join(tags)) > MAX_TAG_LENGTH or len(tags) > MAX_TAGS_PER_EVENT
    except TypeError:
        suspect = True
    if suspect or "" in tags or (metadata is not None and type(metadata) is not dict):
        reason = _unreadable_reason(tags, metadata)
        if reason:
            raise UnreadableEventError(position, reason)
    event = _trusted(
        Event,
        _EVENT_FIELDS,
        {"type": type_, "data": data, "tags": tags, "metadata": metadata, "id": id_},
    )
    return _trusted(  # type: ignore[no-any-return]
        SequencedEvent,
        _SEQUENCED_FIELDS,
        {"position": position, "event": event, "recorded_at": recorded_at},
    )


def _unreadable_reason(tags: tuple[Any, ...], metadata: Any) -> str | None:
    """Why a row cannot be an Event, or None if it can after all."""
    if metadata is not None and type(metadata) is not dict:
        return f"its metadata is a JSON {type(metadata).__name__}, not an object"
    if len(tags) > MAX_TAGS_PER_EVENT:
        return f"it carries {len(tags)} tags, more than {MAX_TAGS_PER_EVENT}"
    if not all(type(tag) is str and tag for tag in tags):
        return "it carries a NULL, empty or nested tag"
    if max(map(len, tags)) > MAX_TAG_LENGTH:
        return f"it carries a tag longer than {MAX_TAG_LENGTH} characters"
    return None


def read_result(call: ReadCall, rows: Sequence[Sequence[Any]]) -> ReadResult:
    """Build the ReadResult: events, and the head the read's contract promises.

    An unreadable row raises :class:`UnreadableEventError` carrying the events before it.
    """
    safe_head = rows[0][0] if rows else None
    events: list[SequencedEvent] = []
    try:
        for row in rows:
            if row[1] is not None:
                events.append(to_event(row))
    except UnreadableEventError as exc:
        exc.preceding = tuple(events)
        raise
    if call.limit is None or call.backwards:
        head = safe_head
    else:
        head = events[-1].position if events else None
    return ReadResult(events, head)


class StreamPage:
    """One page of a stream, turned into events one row at a time.

    Events are built as the consumer takes them, so a consumer that does not keep them frees
    each one before the next is built: a stream of a million events never holds more than a
    page of rows, and its objects die young (cheap for Python's garbage collector).
    """

    def __init__(self, rows: Iterable[Sequence[Any]]) -> None:
        self._rows = rows
        self.count = 0
        self.last: int | None = None

    def __iter__(self) -> Iterator[SequencedEvent]:
        for row in self._rows:
            if row[1] is None:  # the row that carries only the head: no event
                return
            self.count += 1
            self.last = row[1]
            yield to_event(row)
