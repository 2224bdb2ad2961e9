"""What an append costs inside the server: the SQL functions alone, without a client.

A procedure calls ``dcb.<function>`` and commits, N times, timing each call + COMMIT with
``clock_timestamp()`` (``synchronous_commit = off``: the WAL flush is the same for every
function and would hide their difference). Functions take turns in rounds; the table gives the
median of each round's p50. A plain INSERT into ``dcb.events`` is the floor.

    python -m benchmarks.append_in_server --url postgresql://postgres@127.0.0.1:5432/postgres

``--paired A,B`` times two bodies call by call instead: one procedure alternates A and B on
every append, so a change of the machine's speed (which moves p50s by 50% and more between
runs here) falls on both alike; it prints each round's two p50s and the median difference,
which resolves 1-2 us (two copies of one function differ by 0-1 us). ``B`` may name a file of
``dcb_store/sql`` that creates ``dcb.append_v5``: its body is installed as
``dcb.append_paired`` (``--paired append_v5,v8_append.sql`` compares revision 0009's body with
revision 0008's); ``B`` = ``floor`` installs a body that only inserts the event (what no
append body can go below).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import psycopg

from dcb_store import _sql, migrations
from dcb_store.bench._common import recreate_database

DB = "dcb_store_bench_in_server"
PROCEDURE = """
CREATE PROCEDURE public.time_appends(p_function text, p_conditional boolean, p_n integer,
                                     p_timeout_ms integer,
                                     INOUT p_p50 double precision DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_started timestamptz;
    v_times double precision[] := '{}';
    v_tag text;
    v_outcome text;
BEGIN
    FOR i IN 1 .. p_n LOOP
        v_tag := 's:' || gen_random_uuid();
        v_started := clock_timestamp();
        IF p_function = 'insert' THEN
            INSERT INTO dcb.events (type, tags, data)
            VALUES ('Registered', ARRAY[v_tag], '{"x": 1}');
        ELSE
            EXECUTE format('SELECT outcome FROM dcb.%I($1, ''{}'', $2, $3)', p_function)
               INTO v_outcome
              USING jsonb_build_array(jsonb_build_object('type', 'Registered',
                        'tags', jsonb_build_array(v_tag), 'data', '{"x": 1}'::jsonb)),
                    CASE WHEN p_conditional THEN jsonb_build_object('items',
                        jsonb_build_array(jsonb_build_object('types', '[]'::jsonb,
                                                             'tags', jsonb_build_array(v_tag))))
                    END, p_timeout_ms;
        END IF;
        COMMIT;
        v_times := v_times || extract(epoch FROM clock_timestamp() - v_started) * 1e6;
    END LOOP;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY t) INTO p_p50 FROM unnest(v_times) t;
END
$$;

CREATE PROCEDURE public.time_pair(p_a text, p_b text, p_conditional boolean, p_n integer,
                                  p_timeout_ms integer,
                                  INOUT p_a50 double precision DEFAULT NULL,
                                  INOUT p_b50 double precision DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    v_a double precision[] := '{}';
    v_b double precision[] := '{}';
    v_p50 double precision;
BEGIN
    -- one append at a time, A and B alternating: each sample is one call + COMMIT
    FOR i IN 1 .. p_n LOOP
        CALL public.time_appends(p_a, p_conditional, 1, p_timeout_ms, v_p50);
        v_a := v_a || v_p50;
        CALL public.time_appends(p_b, p_conditional, 1, p_timeout_ms, v_p50);
        v_b := v_b || v_p50;
    END LOOP;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY t) INTO p_a50 FROM unnest(v_a) t;
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY t) INTO p_b50 FROM unnest(v_b) t;
END
$$;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL of the server to use")
    parser.add_argument("--functions", default="append_v5")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=3000, help="appends per function and round")
    parser.add_argument("--paired", default="", help="A,B: two bodies timed call by call")
    parser.add_argument(
        "--lock-timeout-ms",
        type=int,
        default=None,
        help="the lock timeout each append passes (the stores pass 5000 by default; none: NULL)",
    )
    args = parser.parse_args()
    recreate_database(args.url, DB)
    url = args.url.rsplit("/", 1)[0] + "/" + DB
    migrations.upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PROCEDURE)
        conn.execute("SET synchronous_commit = off")
        if args.paired:
            a, b = args.paired.split(",")
            _paired(conn, a, b, rounds=args.rounds, n=args.n, timeout=args.lock_timeout_ms)
            return
        cases = [("insert", False)] + [
            (f, c) for f in args.functions.split(",") for c in (False, True)
        ]
        p50s: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.rounds):
            for function, conditional in cases:
                row = conn.execute(
                    "CALL public.time_appends(%s, %s, %s, %s)",
                    (function, conditional, args.n, args.lock_timeout_ms),
                ).fetchone()
                assert row is not None
                p50s.setdefault((function, conditional), []).append(row[0])
    print(f"call + COMMIT inside the server, µs (median of {args.rounds} rounds' p50)")
    for (function, conditional), values in p50s.items():
        label = "INSERT into dcb.events" if function == "insert" else function
        if conditional:
            label += " + condition"
        print(f"{label:<32} {statistics.median(values):7.0f}")


# The floor: append_v5 replaced by a body that only inserts the one event (same signature, same
# SECURITY DEFINER and settings): what our client and table cost with no guarantee's work,
# hence the best any append body could reach (--paired append_v5,floor; append_vs_peer
# --floor)
FLOOR_BODY = """
CREATE OR REPLACE FUNCTION dcb.append_v5(
    p_events jsonb, p_locks text[], p_condition jsonb, p_lock_timeout_ms integer,
    OUT outcome text, OUT last_position bigint, OUT conflict_position bigint,
    OUT lock_wait_ms double precision, OUT detail text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    INSERT INTO dcb.events (type, tags, data, metadata)
    VALUES (p_events->0->>'type', ARRAY(SELECT jsonb_array_elements_text(p_events->0->'tags')),
            p_events->0->'data', nullif(p_events->0->'metadata', 'null'::jsonb))
    RETURNING position INTO last_position;
    outcome := '00000';
    lock_wait_ms := 0;
END
$$;
"""


def _paired(
    conn: psycopg.Connection[Any], a: str, b: str, *, rounds: int, n: int, timeout: int | None
) -> None:
    if b.endswith(".sql") or b == "floor":
        body = FLOOR_BODY if b == "floor" else _sql.replacing(b, "dcb.append_v5(")
        conn.execute(body.replace("dcb.append_v5(", "dcb.append_paired(", 1))
        b = "append_paired"
    print(f"{a} vs {b}: each round's p50s (µs) and the median difference, B - A")
    for conditional in (False, True):
        pairs = []
        for _ in range(rounds):
            row = conn.execute(
                "CALL public.time_pair(%s, %s, %s, %s, %s)", (a, b, conditional, n, timeout)
            ).fetchone()
            assert row is not None
            pairs.append((row[0], row[1]))
        diff = statistics.median(y - x for x, y in pairs)
        print(
            f"{'conditional' if conditional else 'plain':<12} "
            + ", ".join(f"{x:.0f}/{y:.0f}" for x, y in pairs)
            + f"   median {diff:+.1f}"
        )


if __name__ == "__main__":
    main()
