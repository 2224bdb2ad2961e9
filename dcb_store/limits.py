"""Documented limits of what one append may carry and one read may ask for.

Python enforces each of them when the event, query or call is built, with an
:class:`~dcb_store.errors.InvalidInputError` and before anything is sent. The events table
enforces the per-event ones too (``dcb_store/sql/v6_hardening.sql``), for writers that bypass
Python; the append and read functions cap items per query and keys per request.
"""

from __future__ import annotations

__all__ = [
    "MAX_BATCH_EVENTS",
    "MAX_DATA_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_METADATA_BYTES",
    "MAX_POSITION",
    "MAX_QUERY_ITEMS",
    "MAX_READ_LIMIT",
    "MAX_TAGS_PER_ITEM",
    "MAX_TAG_LENGTH",
    "MAX_TAGS_PER_EVENT",
    "MAX_TYPES_PER_ITEM",
    "MAX_TYPE_LENGTH",
]

#: Most events one ``append`` call may carry.
MAX_BATCH_EVENTS = 20_000
#: Longest event type, in characters (the events table checks it too).
MAX_TYPE_LENGTH = 255
#: Longest tag, in characters (the events table checks it too).
MAX_TAG_LENGTH = 1024
#: Most tags one event may carry (the events table checks it too).
MAX_TAGS_PER_EVENT = 100
#: Deepest nesting of JSON containers in an event's data or metadata: ``{}`` and ``[1]`` are
#: depth 1, ``{"a": [1]}`` depth 2 (the events table checks it too). Deeper values would cost
#: deep recursion in every reader's JSON decoder.
MAX_JSON_DEPTH = 64
#: Largest event data, in bytes of its compact JSON text (UTF-8). The events table checks the
#: stored (jsonb) size against a bound that every value within this limit fits.
MAX_DATA_BYTES = 1024 * 1024
#: Largest event metadata, in bytes of its compact JSON text (UTF-8).
MAX_METADATA_BYTES = 64 * 1024
#: Most items one query may hold (reads, streams and append conditions).
MAX_QUERY_ITEMS = 100
#: Most event types one query item may name.
MAX_TYPES_PER_ITEM = 100
#: Most tags one query item may require (an item with more than an event can carry matches
#: nothing).
MAX_TAGS_PER_ITEM = MAX_TAGS_PER_EVENT
#: Largest ``limit`` one read may ask for (a PostgreSQL integer).
MAX_READ_LIMIT = 2**31 - 1
#: Largest position (``after`` of a read, a stream, a subscription or a condition): positions
#: are PostgreSQL bigints.
MAX_POSITION = 2**63 - 1
