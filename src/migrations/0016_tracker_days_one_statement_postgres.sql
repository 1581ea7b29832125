-- The daily-summary trigger (migration 15) in one statement instead of two. It locked each
-- day's row with an upsert that set a column to itself, then computed and wrote the row: two
-- statements per batch and two row versions per tracker and batch. Now one upsert computes each day
-- from the row as the statement's snapshot saw it and writes it only if the row is still that
-- version (`xmin` compared with the one read, carried in `expected_xmin`). When another
-- transaction changed a row in between (retention marking it stale or deleting it; a writer
-- outside the batch path, whose writers of one tracker take turns on its status row), the
-- statement's days are computed again from their fixes, with the rows locked first. Same rows,
-- same sums in the same order.
-- Measured with benchmarks/days_ab.py: about a fifth less trigger CPU per fix at 500-fix and at
-- 2-fix batches (BENCHMARKS.md, "the trigger in one statement").

-- Only the upsert's `excluded` row carries it: the version of the row the statement read (NULL:
-- it read none). Stored rows keep NULL.
ALTER TABLE tracker_days ADD COLUMN expected_xmin xid;

CREATE OR REPLACE FUNCTION pettracker_days_after_insert() RETURNS trigger
LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    wanted BIGINT;
    written BIGINT;
BEGIN
    -- Per tracker and day: appended fixes (all later than the day's last, or a day without a
    -- row) extend the sums in device-time order, as running sums whose first term is the stored
    -- sum plus the segment from the day's last fix: the same additions in the same order as
    -- summing the whole day, so the row stays bit for bit what the view computes. A late fix or
    -- a stale row computes the whole day again from its fixes.
    WITH fixes AS (
        SELECT tracker_id, day, device_time, lat, lon,
               row_number() OVER w AS n, count(*) OVER g AS k, min(device_time) OVER g AS first_new,
               lag(device_time) OVER w AS prev_time,
               lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon
        FROM (SELECT tracker_id, date_bin('1 day', device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS day, device_time, lat, lon
              FROM new_fixes) x
        WINDOW g AS (PARTITION BY tracker_id, day), w AS (g ORDER BY device_time)
    ), steps AS (
        SELECT f.tracker_id, f.day, f.n, f.k, f.first_new, f.device_time, f.lat, f.lon,
               d.xmin AS seen, d.points AS seen_points, d.first_fix AS seen_first_fix,
               coalesce(d.stale OR (d.points > 0 AND f.first_new < d.last_fix), false) AS late,
               coalesce(NOT d.stale AND (d.points = 0 OR f.first_new > d.last_fix), true) AS appended,
               CASE WHEN f.n > 1 THEN haversine_m(f.prev_lat, f.prev_lon, f.lat, f.lon)
                    WHEN d.last_lat IS NULL THEN coalesce(d.distance_m, 0)
                    ELSE d.distance_m + haversine_m(d.last_lat, d.last_lon, f.lat, f.lon) END AS metres,
               CASE WHEN f.n > 1
                    THEN moving_segment_s(f.prev_time, f.prev_lat, f.prev_lon, f.device_time, f.lat, f.lon)
                    ELSE coalesce(d.moving_s, 0) + moving_segment_s(d.last_fix, d.last_lat, d.last_lon,
                                                                    f.device_time, f.lat, f.lon) END AS seconds
        -- OFFSET 0 keeps `f.n = 1` a one-time filter: one key probe per day, not per fix.
        FROM fixes f
        LEFT JOIN LATERAL (SELECT d.*, d.xmin FROM tracker_days d
                           WHERE d.tracker_id = f.tracker_id AND d.day = f.day AND f.n = 1 OFFSET 0) d ON true
    ), sums AS (
        SELECT tracker_id, day, n, k, first_new, device_time, lat, lon,
               first_value(seen) OVER s AS seen, first_value(seen_points) OVER s AS seen_points,
               first_value(seen_first_fix) OVER s AS seen_first_fix,
               first_value(late) OVER s AS late, first_value(appended) OVER s AS appended,
               sum(metres) OVER s AS distance_m, sum(seconds) OVER s AS moving_s
        FROM steps
        WINDOW s AS (PARTITION BY tracker_id, day ORDER BY n ROWS UNBOUNDED PRECEDING)
    ), settled AS (
        SELECT s.tracker_id, s.day, s.seen,
               CASE WHEN s.late THEN r.points ELSE coalesce(s.seen_points, 0) + s.k END AS points,
               CASE WHEN s.late THEN r.distance_m ELSE s.distance_m END AS distance_m,
               CASE WHEN s.late THEN r.moving_s ELSE s.moving_s END AS moving_s,
               CASE WHEN s.late THEN r.first_fix ELSE coalesce(s.seen_first_fix, s.first_new) END AS first_fix,
               CASE WHEN s.late THEN r.last_fix ELSE s.device_time END AS last_fix,
               CASE WHEN s.late THEN r.last_lat ELSE s.lat END AS last_lat,
               CASE WHEN s.late THEN r.last_lon ELSE s.lon END AS last_lon
        -- OFFSET 0 keeps `s.late` a one-time filter: appended days never read their fixes.
        FROM sums s
        LEFT JOIN LATERAL (SELECT * FROM pettracker_day_from_fixes(s.tracker_id, s.day) WHERE s.late OFFSET 0) r ON true
        WHERE s.n = s.k AND (s.late OR s.appended)
    ), written AS (
        -- In key order, so writers of the same days lock their rows in the same order.
        INSERT INTO tracker_days AS d (tracker_id, day, points, distance_m, moving_s, first_fix,
                                       last_fix, last_lat, last_lon, stale, expected_xmin)
        SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix, last_lat,
               last_lon, false, seen
        FROM settled ORDER BY tracker_id, day
        ON CONFLICT (tracker_id, day) DO UPDATE SET
            points = excluded.points, distance_m = excluded.distance_m, moving_s = excluded.moving_s,
            first_fix = excluded.first_fix, last_fix = excluded.last_fix,
            last_lat = excluded.last_lat, last_lon = excluded.last_lon, stale = false,
            expected_xmin = NULL
        -- Written only over the version it was computed from.
        WHERE d.xmin = excluded.expected_xmin
        -- An update clears `expected_xmin`; an insert keeps the version read, which is NULL
        -- unless the row read was deleted since.
        RETURNING d.expected_xmin IS NULL AS trusted
    )
    SELECT (SELECT count(*) FROM settled), (SELECT count(*) FROM written WHERE trusted)
    INTO wanted, written;
    IF written = wanted THEN
        RETURN NULL;
    END IF;

    -- Some row changed after the statement's snapshot, appeared (another writer created the
    -- day) or went (retention deleted an emptied day, so the upsert inserted what it computed
    -- from the row it had read). Rare: compute every day of the statement again from its
    -- fixes, with the rows locked first, in key order, so that this statement's new snapshot
    -- sees what the other transaction committed.
    INSERT INTO tracker_days AS d (tracker_id, day)
    SELECT DISTINCT tracker_id, date_bin('1 day', device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') FROM new_fixes ORDER BY 1, 2
    ON CONFLICT (tracker_id, day) DO UPDATE SET points = d.points;
    UPDATE tracker_days d
    SET points = r.points, distance_m = r.distance_m, moving_s = r.moving_s,
        first_fix = r.first_fix, last_fix = r.last_fix, last_lat = r.last_lat,
        last_lon = r.last_lon, stale = false, expected_xmin = NULL
    FROM (SELECT DISTINCT tracker_id, date_bin('1 day', device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS day
          FROM new_fixes) k
    CROSS JOIN LATERAL pettracker_day_from_fixes(k.tracker_id, k.day) r
    WHERE d.tracker_id = k.tracker_id AND d.day = k.day;
    RETURN NULL;
END
$$;
